"""Retrieval metrics (report section 3.1.1) plus the retrieval-native ones it asked for (4.5), each
defined once in ``measures``: this module computes their per-query statistics, exactly from a
ranked match matrix or blockwise from ranks.

Every query searches all other items of its split (never itself). Top-k = fraction of queries with
at least one same-identity item among the first k; mAP = mean over queries of average precision
over the whole ranking; score = 600 Top-1 + 300 Top-5 + 100 Top-10 (0-1000); R-precision and
MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check"): with R = the query's number of
same-identity items, the precision among the first R results, and average precision truncated at
R (divided by R). Queries with no same-identity item in the gallery cannot be scored and are left
out (``n_queries`` says how many counted).

Everything is computed in blocks of query rows (memory O(N * chunk), never an N x N matrix), on the
embeddings' device; on a GPU out-of-memory the computation is redone on the CPU.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from benchmark.evaluation.measures import QueryStats, query_scores, reduce
from benchmark.evaluation.retrieval import faiss, search
#: resamples of the score's test-sample interval (``sample_interval``)
N_BOOT = 1000
#: similarity entries per query block (x ~26 bytes of working memory each: ~110 MB)
CHUNK = 1 << 22

log = logging.getLogger(__name__)


def sample_interval(query_scores, labels, confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """Half-width of the ``confidence`` percentile interval of the score (the mean of the per-query
    scores) when the split's people are drawn again: a cluster bootstrap over identities, since one
    person's queries are not independent. It is the test sample's share of the uncertainty, which
    seeds cannot show: a deterministic configuration (frozen features) has no seed spread, yet its
    score is one draw of test people. NaN with fewer than 2 identities."""
    s = np.asarray(query_scores, dtype=np.float64)
    _, person = np.unique(np.asarray(labels), return_inverse=True)
    n = int(person.max()) + 1 if len(person) else 0
    if n < 2:
        return float("nan")
    sums, counts = np.bincount(person, weights=s, minlength=n), np.bincount(person, minlength=n).astype(np.float64)
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    lo, hi = np.quantile((draws @ sums) / (draws @ counts), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float((hi - lo) / 2)


def per_query_scores(matches: np.ndarray, n_relevant: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(each scorable query's own score, which queries are scorable) of a ranked match matrix: the
    score is their mean; two configurations ranked on the same queries compare query by query."""
    matches = np.asarray(matches, dtype=bool)
    valid = (matches.sum(1) if n_relevant is None else np.asarray(n_relevant)) > 0
    m = matches[valid]
    return query_scores(_first_hit(m)), valid


def _first_hit(m: np.ndarray) -> np.ndarray:
    """Each row's 1-based rank of its first match, inf without one (an empty gallery has no column)."""
    return np.where(m.any(1), m.argmax(1) + 1, np.inf) if m.shape[1] else np.full(len(m), np.inf)


def from_matches(matches: np.ndarray, n_relevant: np.ndarray | None = None,
                 labels: np.ndarray | None = None) -> dict[str, float]:
    """Metrics from a ranked match matrix [n_query, n_ranked] (True = same identity).

    ``n_relevant``: same-identity items per query in the whole gallery (default: row sums, right
    when the ranking covers the whole gallery). ``labels``: each query's identity, for the score's
    test-sample interval (``score_sample_ci``; absent without them).
    """
    matches = np.asarray(matches, dtype=bool)
    n_relevant = matches.sum(1) if n_relevant is None else np.asarray(n_relevant)
    valid = n_relevant > 0
    m, n_rel = matches[valid], n_relevant[valid]
    position = np.arange(1, m.shape[1] + 1)
    precision = np.cumsum(m, axis=1) / position
    within_r = m & (position <= n_rel[:, None])
    stats = QueryStats(best=_first_hit(m), precision_sum=(precision * m).sum(1),
                       precision_sum_r=(precision * within_r).sum(1), hits_r=within_r.sum(1), n_rel=n_rel)
    out = reduce(stats) | {"n_queries": int(valid.sum())}
    if labels is not None:
        out["score_sample_ci"] = sample_interval(query_scores(stats.best), np.asarray(labels)[valid])
    return out


def query_gallery_metrics(scores, query_labels, gallery_labels) -> dict[str, float]:
    """The same metrics for query -> gallery retrieval (two domains): ``scores`` [n_query, n_gallery]
    (higher = more similar: cosine, or a re-ranker's), every query ranking the whole gallery in the
    canonical order (score descending, ties by the lower gallery index). A query whose identity has
    no gallery item is left out (``n_queries`` counts those scored)."""
    return from_matches(query_gallery_matches(scores, query_labels, gallery_labels), labels=query_labels)


def query_gallery_matches(scores, query_labels, gallery_labels) -> np.ndarray:
    """The ranked match matrix of ``scores`` in the canonical order (score descending, ties by the
    lower gallery index)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")
    return np.asarray(gallery_labels)[order] == np.asarray(query_labels)[:, None]


def retrieval_metrics(embeddings, labels, backend: str = "auto", chunk: int = CHUNK) -> dict[str, float]:
    """Leave-one-out retrieval within one split: every item queries all the others.

    ``backend``: ``faiss`` or ``torch`` rank the whole gallery with ``retrieval.search`` and read
    the metrics off the ranking (a cross-check for small inputs: it holds the full ranking);
    ``auto`` (the fast path, on the embeddings' device) computes the rank of every same-identity
    item in the canonical order block by block, without sorting — the same numbers (tests hold
    all three to an independent computation).
    """
    if backend != "auto":
        labels = np.asarray(labels)
        _, idx = search(embeddings, embeddings, len(labels), exclude_self=True, backend=backend)
        return from_matches(labels[idx] == labels[:, None], labels=labels)
    x = torch.as_tensor(embeddings).float()
    return _cpu_on_oom(_metrics_from_ranks, x, _dense_labels(labels, x.device), chunk)


def _dense_labels(labels, device) -> torch.Tensor:
    """Labels as 0..n_ids-1 (any hashable labels; bincount-friendly)."""
    return torch.as_tensor(np.unique(np.asarray(labels), return_inverse=True)[1].ravel(), device=device)


def _cpu_on_oom(fn, x: torch.Tensor, *args):
    """``fn(x, *args)`` on x's device; a CUDA out-of-memory redoes it on the CPU (logged) instead of
    failing a run that already trained."""
    try:
        return fn(x, *args)
    except torch.OutOfMemoryError:
        if x.device.type == "cpu":
            raise
        log.warning("%s: out of GPU memory for %d embeddings; computing on the CPU", fn.__name__, len(x))
        torch.cuda.empty_cache()
        return fn(x.cpu(), *(a.cpu() if isinstance(a, torch.Tensor) else a for a in args))


def _block_ranks(sims: torch.Tensor, q: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Rank of gallery item j[p] for block row q[p] (pairs grouped by row): 1 + #items scored
    higher + #items tied with a lower gallery index. Rows must hold -inf at the query itself.

    No sort of the row: each positive score p gives two bucket boundaries (the float just below
    p, and p), every item is bucketed once (searchsorted, O(N log R)), and a suffix sum of the
    bucket counts gives, for each positive, the items above it; an item in an odd bucket equals
    a positive's score. Exact ties are rare: rows with one are ranked directly."""
    n_rows, n = sims.shape
    dev = sims.device
    counts = torch.bincount(q, minlength=n_rows)
    slot = torch.arange(len(q), device=dev) - (torch.cumsum(counts, 0) - counts)[q]
    width = int(counts.max())
    score = sims[q, j]
    bounds = torch.full((n_rows, width), float("inf"), device=dev)
    bounds[q, slot] = score
    bounds, perm = bounds.sort(1)
    own = torch.empty_like(perm).scatter_(1, perm, torch.arange(width, device=dev).expand(n_rows, width))[q, slot]
    edges = torch.stack([torch.nextafter(bounds, torch.tensor(float("-inf"), device=dev)), bounds], 2)
    bucket = torch.searchsorted(edges.view(n_rows, 2 * width), sims, out_int32=True).long()
    hist = torch.zeros(n_rows, 2 * width + 1, dtype=torch.int64, device=dev).scatter_add_(
        1, bucket, torch.ones_like(bucket))
    del bucket
    above = hist.flip(1).cumsum(1).flip(1)  # above[r, b] = #items in buckets >= b
    rank = 1 + above[q, 2 * own + 2]
    # ties: an item (besides the positives themselves) equal to a positive's score, or tied positives
    tied = (hist[:, 1::2].sum(1) > counts) | ((bounds[:, 1:] == bounds[:, :-1]) & bounds[:, 1:].isfinite()).any(1)
    tie_pairs = tied[q].nonzero().squeeze(1)
    if len(tie_pairs):
        rows, s, col = sims[q[tie_pairs]], score[tie_pairs, None], j[tie_pairs, None]
        cols = torch.arange(n, device=dev)
        rank[tie_pairs] = 1 + (rows > s).sum(1) + ((rows == s) & (cols < col)).sum(1)
    return rank


def _positive_pairs(labels: torch.Tensor, members: torch.Tensor, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(block row, gallery index) of every same-identity pair of queries a..b-1, self excluded,
    from ``members`` = item indices grouped by label (no B x N comparison)."""
    dev = labels.device
    sizes = torch.bincount(labels)
    starts = torch.cumsum(sizes, 0) - sizes
    group = sizes[labels[a:b]]
    q = torch.repeat_interleave(torch.arange(b - a, device=dev), group)
    k = torch.arange(len(q), device=dev) - torch.repeat_interleave(torch.cumsum(group, 0) - group, group)
    j = members[starts[labels[a + q]] + k]
    keep = j != a + q
    return q[keep], j[keep]


def _metrics_from_ranks(x: torch.Tensor, labels: torch.Tensor, chunk: int = CHUNK) -> dict[str, float]:
    """Per-query sums over its same-identity items, accumulated one block of query rows at a time."""
    n, dev = len(x), x.device
    n_rel = (torch.bincount(labels)[labels] - 1).double()  # same-identity items besides self
    ap, ap_r, hits_r = (torch.zeros(n, dtype=torch.float64, device=dev) for _ in range(3))
    best = torch.full((n,), float("inf"), dtype=torch.float64, device=dev)
    step = max(1, chunk // max(n, 1))
    members = torch.argsort(labels, stable=True)
    for a in range(0, n, step):
        b = min(n, a + step)
        q, j = _positive_pairs(labels, members, a, b)
        if not len(q):
            continue
        diag = torch.arange(b - a, device=dev)
        sims = x[a:b] @ x.T
        sims[diag, diag + a] = float("-inf")
        rank = _block_ranks(sims, q, j)
        del sims
        order = torch.argsort(q * (n + 1) + rank)
        q, rank = q[order], rank[order].double()
        counts = torch.bincount(q, minlength=b - a)
        hits = (torch.arange(len(q), device=dev) - (torch.cumsum(counts, 0) - counts)[q] + 1).double()
        within_r = rank <= n_rel[a + q]
        ap[a:b].index_add_(0, q, hits / rank)
        ap_r[a:b].index_add_(0, q, torch.where(within_r, hits / rank, 0.0))
        hits_r[a:b].index_add_(0, q, within_r.double())
        best[a:b].scatter_reduce_(0, q, rank, reduce="amin")
    valid = n_rel > 0
    v = valid.cpu().numpy()
    stats = QueryStats(*(t.cpu().numpy()[v] for t in (best, ap, ap_r, hits_r, n_rel)))
    out = reduce(stats) | {"n_queries": int(v.sum())}
    out["score_sample_ci"] = sample_interval(query_scores(stats.best), labels.cpu().numpy()[v])
    return out


#: spread of the embeddings around their mean, relative to their squared norm, below which the rows
#: are one vector up to float noise: cosines then differ by ~1e-6 or less, i.e. within a few float32
#: roundings, and the ranking is the tie-break order (or the CPU's rounding), not the model's
COLLAPSED_SPREAD = 1e-6


def degenerate(embeddings) -> str | None:
    """Why ``embeddings`` cannot be ranked meaningfully (non-finite values; all rows equal or nearly
    so), else None. E.g. EfficientNet-B0 with random weights gives features of ~1e-14: after the head
    every test embedding is the same row, NMI 0 and Top-k only the tie-break order."""
    x = torch.as_tensor(embeddings).detach().cpu().double()
    bad = int((~torch.isfinite(x)).any(1).sum())
    if bad:
        return f"{bad} of {len(x)} embeddings contain NaN or inf"
    if len(x) < 2:
        return None
    power = float(x.square().sum(1).mean())
    spread = float((x - x.mean(0)).square().sum(1).mean()) / power if power else 0.0
    if spread < COLLAPSED_SPREAD:
        return (f"the {len(x)} embeddings have collapsed to one vector (spread {spread:.1e} of their squared norm, "
                f"< {COLLAPSED_SPREAD:g}): the ranking is the tie-break order, not the model's")
    return None


def embedding_metrics(embeddings, labels, seed: int = 0) -> dict[str, float]:
    """Structure of the embedding space: NMI of k-means clusters (k = identities) vs identities,
    and mean cosine distance within identities (intra) and between them (inter); the ratio is
    what retrieval needs. Memory O(N * chunk): intra/inter come from per-identity sums, k-means
    from faiss (``kmeans_clusters``)."""
    from sklearn.metrics import normalized_mutual_info_score

    x = torch.as_tensor(embeddings).detach().cpu().double()
    dense = _dense_labels(labels, "cpu")
    intra, inter = _mean_distances(x, dense)
    clusters = kmeans_clusters(x.float().numpy(), int(dense.max()) + 1, seed)
    return {"nmi": float(normalized_mutual_info_score(dense.numpy(), clusters)),
            "intra": intra, "inter": inter, "intra_inter_ratio": intra / inter if inter else float("nan")}


def _mean_distances(x: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean of 1 - x_i.x_j over ordered pairs i != j of one identity, and over pairs of different
    identities, from sums: sum over pairs in a set S of x_i.x_j = |sum_S x|^2 (minus |x_i|^2 for i = j)."""
    class_sums = torch.zeros(int(labels.max()) + 1, x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
    sizes = torch.bincount(labels).double()
    total, self_dots = float(x.sum(0).square().sum()), float(x.square().sum())
    within = float(class_sums.square().sum())
    n_intra, n_inter = float((sizes * (sizes - 1)).sum()), float(len(x) ** 2 - sizes.square().sum())
    intra = 1 - (within - self_dots) / n_intra if n_intra else float("nan")
    inter = 1 - (total - within) / n_inter if n_inter else float("nan")
    return intra, inter


def kmeans_clusters(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster index of every row: faiss k-means (Lloyd, 20 iterations, random init; on the GPU
    when faiss has one) — O(N * k) time per iteration, O(N + k) memory. Without faiss (the GPU
    image), scikit-learn's KMeans (k-means++ init, chunked Lloyd): the same objective, slower at
    large k, so NMI may differ slightly between the two."""
    if faiss is None:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():  # degenerate embeddings (e.g. random weights) give fewer clusters
            warnings.simplefilter("ignore", ConvergenceWarning)
            return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x.astype(np.float64))
    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, gpu=faiss.get_num_gpus() > 0,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    km.train(x)
    return km.index.search(x, 1)[1].ravel()
