"""Retrieval metrics (report section 3.1.1) plus the retrieval-native ones it asked for (4.5).

Every query searches all other items of its split (never itself). Top-k = fraction of queries with
at least one same-identity item among the first k; mAP = mean over queries of average precision
over the whole ranking; score = 600 Top-1 + 300 Top-5 + 100 Top-10 (0-1000). Queries with no
same-identity item in the gallery cannot be scored and are left out (``n_queries`` says how many
counted).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from benchmark.retrieval import search

KS = (1, 5, 10)
SCORE_WEIGHTS = {1: 600, 5: 300, 10: 100}


def competition_score(top: dict[int, float]) -> float:
    return sum(w * top[k] for k, w in SCORE_WEIGHTS.items())


def from_matches(matches: np.ndarray, n_relevant: np.ndarray | None = None) -> dict[str, float]:
    """Metrics from a ranked match matrix [n_query, n_ranked] (True = same identity).

    ``n_relevant``: same-identity items per query in the whole gallery (default: row sums, right
    when the ranking covers the whole gallery).
    """
    matches = np.asarray(matches, dtype=bool)
    n_relevant = matches.sum(1) if n_relevant is None else np.asarray(n_relevant)
    valid = n_relevant > 0
    m, n_rel = matches[valid], n_relevant[valid]
    top = {k: float(m[:, :k].any(1).mean()) if len(m) else 0.0 for k in KS}
    hits = np.cumsum(m, axis=1)
    precision = hits / np.arange(1, m.shape[1] + 1)
    ap = (precision * m).sum(1) / n_rel if len(m) else np.zeros(0)
    out = {f"top{k}": v for k, v in top.items()}
    out["map"] = float(ap.mean()) if len(m) else 0.0
    out["score"] = competition_score(top)
    out["n_queries"] = int(valid.sum())
    return out


def retrieval_metrics(embeddings, labels, backend: str = "auto") -> dict[str, float]:
    """Leave-one-out retrieval within one split: every item queries all the others.

    ``backend``: ``faiss`` or ``torch`` rank the whole gallery with ``retrieval.search`` and read
    the metrics off the ranking; ``auto`` (the fast path, on the embeddings' device) counts each
    same-identity item's rank in the canonical order directly from the similarity matrix — the
    same numbers without sorting (tests hold all three to an independent computation).
    """
    if backend != "auto":
        labels = np.asarray(labels)
        _, idx = search(embeddings, embeddings, len(labels), exclude_self=True, backend=backend)
        return from_matches(labels[idx] == labels[:, None])
    return _metrics_from_ranks(torch.as_tensor(embeddings).float(), torch.as_tensor(np.asarray(labels)))


def _metrics_from_ranks(x: torch.Tensor, labels: torch.Tensor, chunk: int = 1 << 22) -> dict[str, float]:
    """Rank of every (query, same-identity item) pair: 1 + #items scored higher + #items tied with a
    lower gallery index (the canonical order); self is never ranked."""
    n = len(x)
    labels = labels.to(x.device)
    sims = x @ x.T
    sims.fill_diagonal_(float("-inf"))
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    q, j = same.nonzero(as_tuple=True)
    cols = torch.arange(n, device=x.device)
    rank = torch.empty_like(q)
    step = max(1, chunk // max(n, 1))
    for a in range(0, len(q), step):
        rows, s = sims[q[a:a + step]], sims[q[a:a + step], j[a:a + step]][:, None]
        rank[a:a + step] = 1 + (rows > s).sum(1) + ((rows == s) & (cols < j[a:a + step, None])).sum(1)
    order = torch.argsort(q * (n + 1) + rank)
    q, rank = q[order], rank[order]
    counts = torch.bincount(q, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    hits_so_far = torch.arange(len(q), device=x.device) - first[q] + 1
    ap = torch.zeros(n, dtype=torch.float64, device=x.device).index_add_(0, q, hits_so_far.double() / rank.double())
    best = torch.full((n,), float("inf"), dtype=torch.float64, device=x.device)
    best = best.scatter_reduce(0, q, rank.double(), reduce="amin")
    valid = counts > 0
    n_valid = int(valid.sum())
    top = {k: float((best[valid] <= k).double().mean()) if n_valid else 0.0 for k in KS}
    out = {f"top{k}": v for k, v in top.items()}
    out["map"] = float((ap[valid] / counts[valid]).mean()) if n_valid else 0.0
    out["score"] = competition_score(top)
    out["n_queries"] = n_valid
    return out


def embedding_metrics(embeddings, labels, seed: int = 0) -> dict[str, float]:
    """Structure of the embedding space: NMI of k-means clusters vs identities, and mean cosine
    distance within identities (intra) and between them (inter); the ratio is what retrieval needs."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import normalized_mutual_info_score

    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    n_ids = len(np.unique(labels))
    with warnings.catch_warnings():  # degenerate embeddings (e.g. random weights) give fewer clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        clusters = KMeans(n_clusters=n_ids, n_init=1, random_state=seed).fit_predict(x)
    dist = 1.0 - x @ x.T
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(x), dtype=bool)
    intra = float(dist[same & off_diag].mean())
    inter = float(dist[~same].mean())
    return {"nmi": float(normalized_mutual_info_score(labels, clusters)),
            "intra": intra, "inter": inter, "intra_inter_ratio": intra / inter}
