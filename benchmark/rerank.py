"""Test-time remedies for query -> gallery retrieval that use only the unlabeled embeddings of the
queries and the gallery (what a competitor has): per-domain centering, alpha query expansion (αQE),
database-side augmentation (DBA) and k-reciprocal re-ranking. Each returns a score matrix
[n_query, n_gallery], higher = more similar, ranked by ``metrics.query_gallery_metrics``.

- centering: subtract each side's own mean embedding, L2-normalize again (removes the offset a
  domain puts on every embedding).
- αQE (Radenović et al. 2018) / DBA (Arandjelović & Zisserman 2012): an embedding is replaced by
  the normalized sum of itself and its ``k`` nearest gallery items, weighted by similarity^``alpha``;
  DBA does it for every gallery item (itself excluded from its neighbours), αQE for every query.
- k-reciprocal (Zhong et al. 2017, "Re-ranking Person Re-identification with k-reciprocal
  Encoding"): the Jaccard distance of k-reciprocal neighbour sets, mixed with the original
  distance. No maintained PyPI package installs it here; this is a compact version of the
  authors' algorithm, held to a brute-force set-based version in the tests.
"""

from __future__ import annotations

import numpy as np

from benchmark.config import Config, ConfigError

#: each re-ranker's parameters and defaults
DEFAULTS = {"aqe": {"k": 2, "alpha": 3.0}, "dba": {"k": 2, "alpha": 3.0}, "dba+aqe": {"k": 2, "alpha": 3.0},
            "kreciprocal": {"k1": 20, "k2": 6, "lambda_value": 0.3}}


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


def check(cfg: Config) -> None:
    """Raise ConfigError for re-ranker parameters it does not take."""
    if cfg.rerank == "none":
        if cfg.rerank_args:
            raise ConfigError(f"rerank_args={cfg.rerank_args} given but rerank=none; set rerank too")
        return
    unknown = sorted(set(cfg.rerank_args) - set(DEFAULTS[cfg.rerank]))
    if unknown:
        raise ConfigError(f"rerank={cfg.rerank} has no parameter(s) {', '.join(unknown)}; its parameters: "
                          + ", ".join(f"{k}={v}" for k, v in DEFAULTS[cfg.rerank].items()))


def scores(queries, gallery, cfg: Config) -> np.ndarray:
    """Similarity [n_query, n_gallery] after the config's test-time remedies (centering, then rerank)."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    if cfg.centering:
        q, g = centre(q, g)
    check(cfg)
    args = {**DEFAULTS.get(cfg.rerank, {}), **cfg.rerank_args}
    if cfg.rerank in ("dba", "dba+aqe"):
        g = expand(g, g, int(args["k"]), float(args["alpha"]), self_in_base=True)
    if cfg.rerank in ("aqe", "dba+aqe"):
        q = expand(q, g, int(args["k"]), float(args["alpha"]))
    if cfg.rerank == "kreciprocal":
        return -k_reciprocal(q, g, int(args["k1"]), int(args["k2"]), float(args["lambda_value"]))
    return q @ g.T
