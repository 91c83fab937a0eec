"""Test-time remedies for query -> gallery retrieval that use only the unlabeled embeddings of the
queries and the gallery (what a competitor has): per-domain centering and whitening, alpha query
expansion (αQE), database-side augmentation (DBA), k-reciprocal re-ranking and pseudo-label
self-training.

``REMEDIES`` is the one registry: each entry declares its parameters (``benchmark.params.Param``) and
its function. A config switches them on with ``centering: true`` and ``rerank: NAME[+NAME...]``
(applied left to right, e.g. ``dba+aqe``), with ``rerank_args`` given to every member that declares
the name. Config validation, ``benchmark list remedies``, ``submit`` and the report's labels all read
this registry: adding a remedy is one entry here (and its test). A declaration module: config
validation imports it, so it imports nothing of the pipeline (a ``cfg`` here is anything with
``centering``, ``rerank`` and ``rerank_args``, i.e. a ``benchmark.config.Config``).

- centering: subtract each side's own mean embedding, L2-normalize again (removes the offset a
  domain puts on every embedding).
- whiten (CORAL, Sun et al. 2016, "Return of Frustratingly Easy Domain Adaptation"): centering, then
  each side times the inverse square root of its own shrunk covariance (second moments aligned too).
- αQE (Radenović et al. 2018) / DBA (Arandjelović & Zisserman 2012): an embedding is replaced by
  the normalized sum of itself and its ``k`` nearest gallery items, weighted by similarity^``alpha``;
  DBA does it for every gallery item (itself excluded from its neighbours), αQE for every query.
- k-reciprocal (Zhong et al. 2017, "Re-ranking Person Re-identification with k-reciprocal
  Encoding"): the Jaccard distance of k-reciprocal neighbour sets, mixed with the original
  distance. No maintained PyPI package installs it here; this is a compact version of the
  authors' algorithm, held to a brute-force set-based version in the tests.
- selftrain (transductive pseudo-label self-training): k-means (scikit-learn, seeded) on the joint
  query + gallery embeddings (each side centred first, so that a domain is no cluster) gives
  pseudo-labels; a linear projection of the same dimension, initialized to the identity, is trained
  on them with pytorch-metric-learning's ``SupConLoss`` (full batch, Adam, fixed epochs, CPU,
  float64: deterministic), and both sides are returned projected and L2-normalized. torch and the
  library are imported only when it runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmark.params import ConfigError, Param, check_args, describe


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centre(queries: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each side minus its own mean, L2-normalized again."""
    return _normalize(queries - queries.mean(0)), _normalize(gallery - gallery.mean(0))


def expand(x: np.ndarray, base: np.ndarray, k: int, alpha: float, self_in_base: bool = False) -> np.ndarray:
    """``x`` replaced by normalize(x + sum of its ``k`` nearest ``base`` rows x similarity^alpha)
    (negative similarities weigh 0). ``self_in_base``: row i of x is row i of base, not a neighbour."""
    sims = x @ base.T
    if self_in_base:
        np.fill_diagonal(sims, -np.inf)
    k = min(k, sims.shape[1] - int(self_in_base))
    if k < 1:
        return x
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    weights = np.clip(np.take_along_axis(sims, order, 1), 0, None) ** alpha
    return _normalize(x + np.einsum("nk,nkd->nd", weights, base[order]))


def k_reciprocal(queries: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked distances [n_query, n_gallery] (lower = closer) of L2-normalized embeddings."""
    n_q = len(queries)
    x = np.concatenate([queries, gallery]).astype(np.float64)
    n = len(x)
    dist = np.clip(2 - 2 * (x @ x.T), 0, None)  # squared Euclidean distance of unit vectors
    dist = dist / np.maximum(dist.max(1, keepdims=True), 1e-12)
    rank = np.argsort(dist, axis=1, kind="stable")
    k1, k2 = min(k1, n - 1), min(k2, n)
    half = int(np.around(k1 / 2))

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, :k + 1]
        return forward[(rank[forward, :k + 1] == i).any(1)]

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expansion = [r]
        for c in r:
            rc = reciprocal(int(c), half)
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expansion.append(rc)
        e = np.unique(np.concatenate(expansion))
        w = np.exp(-dist[i, e])
        v[i, e] = w / w.sum()
    if k2 > 1:  # local query expansion over the k2 nearest neighbours
        v = v[rank[:, :k2]].mean(1)
    shared = np.zeros((n_q, n))
    for i in range(n_q):
        cols = np.flatnonzero(v[i])
        shared[i] = np.minimum(v[i, cols], v[:, cols]).sum(1)
    jaccard = 1 - shared / (2 - shared)
    final = jaccard * (1 - lambda_value) + dist[:n_q] * lambda_value
    return final[:, n_q:]


def whiten(queries: np.ndarray, gallery: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each side centred, times (C + eps I)^(-1/2) of its own covariance C (1/(n-1) normalization),
    L2-normalized: both domains' second moments aligned to the identity (CORAL, Sun et al. 2016, with
    shrinkage). eps is absolute: L2-normalized embeddings have a covariance of trace <= 1, so the default
    0.1 shrinks strongly towards plain centering, which is what eps -> inf gives."""
    def side(x: np.ndarray) -> np.ndarray:
        centred = x - x.mean(0)
        lam, v = np.linalg.eigh(centred.T @ centred / (len(x) - 1) + eps * np.eye(x.shape[1]))
        return _normalize(centred @ (v / np.sqrt(lam)) @ v.T)
    return side(queries), side(gallery)


def aqe(q: np.ndarray, g: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    return expand(q, g, k, alpha), g


def dba(q: np.ndarray, g: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    return q, expand(g, g, k, alpha, self_in_base=True)


def kreciprocal(q: np.ndarray, g: np.ndarray, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    return -k_reciprocal(q, g, k1, k2, lambda_value)


def selftrain_clusters(n: int, clusters: int | None, per_cluster: float) -> int:
    """The k-means cluster count for ``n`` embeddings: ``clusters`` if given, else ``n / per_cluster``
    rounded (half up): the expected number of identities when each has about ``per_cluster`` items."""
    return int(clusters) if clusters is not None else int(np.floor(n / per_cluster + 0.5))


def pseudo_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means cluster ids of the rows of ``x`` (scikit-learn, k-means++, 3 seeded restarts)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)


def selftrain(q: np.ndarray, g: np.ndarray, clusters: int | None, per_cluster: float, epochs: int, lr: float,
              T: float, seed: int, centred: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both sides through a linear map W (d x d, identity at the start) trained with SupConLoss
    (temperature ``T``) on the k-means pseudo-labels of all ``len(q) + len(g)`` embeddings: ``epochs``
    full-batch Adam steps of learning rate ``lr``; returns normalize(q W), normalize(g W).
    ``centred``: the k-means sees each side minus its own mean (``centre``), so that a domain's offset
    does not become the clusters; W is trained on, and applied to, the embeddings as given, so the
    cross-domain pseudo-pairs teach it to remove the offset."""
    import torch
    from pytorch_metric_learning.losses import SupConLoss

    x = np.concatenate([q, g])
    k = selftrain_clusters(len(x), clusters, per_cluster)
    labels = torch.as_tensor(pseudo_labels(np.concatenate(centre(q, g)) if centred else x, k, seed))
    data = torch.as_tensor(x, dtype=torch.float64)  # nothing random below: torch's global seed is left alone
    w = torch.nn.Parameter(torch.eye(x.shape[1], dtype=torch.float64))
    optimizer = torch.optim.Adam([w], lr=lr)
    loss_fn = SupConLoss(temperature=T)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss_fn(data @ w, labels).backward()
        optimizer.step()
    with torch.no_grad():
        out = _normalize((data @ w).numpy())
    return out[:len(q)], out[len(q):]


def _unclusterable(q: np.ndarray, g: np.ndarray, clusters: int | None, per_cluster: float, centred: bool,
                   **_) -> str | None:
    """Self-training needs at least 2 clusters, fewer clusters than distinct embeddings (else every
    pseudo-label is one item: nothing to pull together) and, ``centred``, sides that centre."""
    if centred and (why := _uncentrable(q, g)):
        return f"{why} (selftrain clusters centred embeddings; rerank_args.centred=false clusters them as given)"
    n = len(q) + len(g)
    k = selftrain_clusters(n, clusters, per_cluster)
    rule = f"clusters={clusters}" if clusters is not None else f"{n} embeddings / per_cluster={per_cluster:g}"
    if k < 2:
        return f"it needs at least 2 pseudo-label clusters ({rule} gives {k})"
    distinct = len(np.unique(np.concatenate([q, g]), axis=0))
    if k >= distinct:
        return f"it needs more distinct embeddings than clusters ({rule} gives {k} clusters for {distinct} " \
               "distinct embeddings)"
    return None


@dataclass(frozen=True)
class Remedy:
    """One test-time remedy. ``fn(queries, gallery, **params)`` returns new (queries, gallery)
    embeddings (``scores=False``) or the final similarity matrix (``scores=True``: last in a chain).
    ``degenerate(queries, gallery, **params)``: why it cannot act on this input (None: it can); the
    chain then skips it, says so, and ranks without it."""

    fn: Callable
    params: dict[str, Param]
    doc: str
    scores: bool = False
    degenerate: Callable = lambda q, g, **_: None


#: a centred row this much shorter than the embeddings it came from is the mean itself, up to float noise
_FLAT = 1e-6


def _uncentrable(q: np.ndarray, g: np.ndarray) -> str | None:
    """Centering needs two rows per side that differ: one query minus its own mean is the zero vector
    (every score 0, the ranking the gallery's file order)."""
    for side, x in (("query", q), ("gallery", g)):
        if len(x) < 2:
            return f"centering needs at least 2 {side} embeddings to estimate the {side} mean (got {len(x)})"
        centred = np.linalg.norm(x - x.mean(0), axis=1)
        if (centred <= _FLAT * np.linalg.norm(x, axis=1).max()).any():
            return f"centering would leave a {side} embedding at the {side} mean (zero vector): the {side} side " \
                   "has no spread to centre"
    return None


def _few_gallery(q: np.ndarray, g: np.ndarray, **_) -> str | None:
    """Neighbour-based remedies need a gallery item besides the one being ranked."""
    return f"it needs at least 2 gallery embeddings (got {len(g)})" if len(g) < 2 else None


_EXPANSION = {"k": Param(int, 2, low=1, doc="neighbours added"),
              "alpha": Param(float, 3.0, low=0, doc="weight = similarity^alpha")}
REMEDIES: dict[str, Remedy] = {
    "centering": Remedy(centre, {}, "subtract each side's mean embedding, L2-normalize again (config: centering)",
                        degenerate=_uncentrable),
    "whiten": Remedy(whiten, {"eps": Param(float, 0.1, low=0, open_low=True, doc="shrinkage added to the covariance")},
                     "per-domain whitening (CORAL): each side centred, times its (covariance + eps I)^(-1/2)",
                     degenerate=lambda q, g, **_: _uncentrable(q, g)),  # it centres first: one row has no covariance
    "dba": Remedy(dba, _EXPANSION, "database-side augmentation: each gallery item + its k nearest gallery items",
                  degenerate=_few_gallery),
    "aqe": Remedy(aqe, _EXPANSION, "alpha query expansion: each query + its k nearest gallery items"),
    "kreciprocal": Remedy(kreciprocal, {"k1": Param(int, 20, low=1), "k2": Param(int, 6, low=1),
                                        "lambda_value": Param(float, 0.3, low=0, high=1)},
                          "k-reciprocal re-ranking (Zhong et al. 2017): Jaccard of k-reciprocal sets", scores=True,
                          degenerate=_few_gallery),
    "selftrain": Remedy(
        selftrain,
        {"clusters": Param(int, None, low=2, nullable=True,
                           doc="k-means clusters; null: (queries + gallery) / per_cluster, rounded"),
         "per_cluster": Param(float, 10.0, low=1, doc="expected items per cluster (per identity) when clusters is null"),
         "epochs": Param(int, 50, low=1, doc="full-batch training steps"),
         "lr": Param(float, 0.01, low=0, open_low=True, doc="Adam learning rate"),
         "T": Param(float, 0.1, low=0, open_low=True, doc="SupConLoss temperature"),
         "seed": Param(int, 0, low=0, high=2**32 - 1, doc="k-means seed"),
         "centred": Param(bool, True, doc="k-means on each side's centred embeddings (a domain offset is no cluster)")},
        "pseudo-label self-training: k-means on queries + gallery, a linear map (identity init) trained with "
        "SupConLoss on the cluster ids", degenerate=_unclusterable),
}
#: the config keys that switch remedies on (the report labels a configuration by them)
CONFIG_KEYS = ("centering", "rerank", "rerank_args")
#: the switch of the centering entry; every other entry is named in ``rerank``
_SWITCH = "centering"


def chain_of(rerank: str) -> list[str]:
    """The remedies a ``rerank`` value names, in order (``none`` -> []), or a ConfigError naming the
    valid ones: an unknown name, the centering entry (its own key), a name twice, or a score-producing
    remedy before the end."""
    names = [] if rerank == "none" else rerank.split("+")
    valid = [n for n in REMEDIES if n != _SWITCH]
    for i, name in enumerate(names):
        if name == _SWITCH:
            raise ConfigError(f"rerank={rerank!r}: centering has its own key; set centering=true")
        if name not in valid:
            raise ConfigError(f"rerank={rerank!r} is not valid: must be none or remedies joined by '+' from: "
                              f"{', '.join(valid)} (benchmark list remedies)")
        if name in names[:i]:
            raise ConfigError(f"rerank={rerank!r} names {name} twice")
        if REMEDIES[name].scores and i < len(names) - 1:
            raise ConfigError(f"rerank={rerank!r}: {name} produces the final scores, so it must come last")
    return names


def chain(cfg) -> list[str]:
    """The config's remedies in the order they apply (centering first); [] = plain cosine search."""
    return ([_SWITCH] if cfg.centering else []) + chain_of(cfg.rerank)


def resolve(cfg) -> list[tuple[str, dict]]:
    """``(name, parameters)`` of each remedy of ``cfg``, its declared domains checked: one
    ConfigError naming ``rerank_args.<name>``, the value and the range, or an argument no member takes."""
    names = chain_of(cfg.rerank)
    args = cfg.rerank_args
    if not names and args:
        raise ConfigError(f"rerank_args={args} given but rerank=none; set rerank too")
    declared = {k: p for n in names for k, p in REMEDIES[n].params.items()}
    owner = f"rerank={cfg.rerank}"
    full = check_args("rerank_args", owner, declared, args) if names else {}
    return [(n, {k: full[k] for k in REMEDIES[n].params}) for n in chain(cfg)]


def check(cfg) -> None:
    """Raise ConfigError for remedies or parameters ``cfg`` cannot use (``resolve``)."""
    resolve(cfg)


def embeddings(queries, gallery, cfg, skipped: dict[str, str] | None = None):
    """(queries, gallery, the final scoring remedy's ``(fn, args)`` or None) after the config's
    remedies that return embeddings (``chain``). A remedy that degenerates on this input
    (``Remedy.degenerate``: one query to centre, one gallery item to expand) is skipped, never run
    into a ranking from nothing: ``skipped`` receives its name and why (the caller records it:
    ``skip_notes``), or it is warned when no mapping is given."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    for name, args in resolve(cfg):
        remedy = REMEDIES[name]
        why = remedy.degenerate(q, g, **args)
        if why:
            if skipped is None:
                warnings.warn(skip_notes({name: why})[0], stacklevel=2)
            else:
                skipped[name] = why
            continue
        if remedy.scores:
            return q, g, (remedy.fn, args)
        q, g = remedy.fn(q, g, **args)
    return q, g, None


def scores(queries, gallery, cfg, skipped: dict[str, str] | None = None) -> np.ndarray:
    """Similarity [n_query, n_gallery] after the config's test-time remedies (``embeddings``, then the
    score-producing remedy if the chain ends with one, else cosine)."""
    q, g, final = embeddings(queries, gallery, cfg, skipped)
    return q @ g.T if final is None else final[0](q, g, **final[1])


def skip_notes(skipped: dict[str, str]) -> list[str]:
    """One line per skipped remedy, for a record's warnings or a submission's summary."""
    return [f"test-time remedy {name} skipped: {why}; ranked without it" for name, why in skipped.items()]


def listing() -> list[dict]:
    """``benchmark list remedies``: every entry, how a config sets it, its parameters and domains."""
    return [{"remedy": name, "config": "centering: true" if name == _SWITCH else f"rerank: {name}",
             "parameters": describe(r.params), "doc": r.doc} for name, r in REMEDIES.items()]
