"""Retrieval metrics (report section 3.1.1) plus the retrieval-native ones it asked for (4.5).

Every query searches all other items of its split (never itself). Top-k = fraction of queries with
at least one same-identity item among the first k; mAP = mean over queries of average precision
over the whole ranking; score = 600 Top-1 + 300 Top-5 + 100 Top-10 (0-1000). Queries with no
same-identity item in the gallery cannot be scored and are left out (``n_queries`` says how many
counted).
"""

from __future__ import annotations

import numpy as np

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
    """Leave-one-out retrieval within one split: every item queries all the others."""
    labels = np.asarray(labels)
    _, idx = search(embeddings, embeddings, len(labels), exclude_self=True, backend=backend)
    return from_matches(labels[idx] == labels[:, None])


def embedding_metrics(embeddings, labels, seed: int = 0) -> dict[str, float]:
    """Structure of the embedding space: NMI of k-means clusters vs identities, and mean cosine
    distance within identities (intra) and between them (inter); the ratio is what retrieval needs."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    n_ids = len(np.unique(labels))
    clusters = KMeans(n_clusters=n_ids, n_init=1, random_state=seed).fit_predict(x)
    dist = 1.0 - x @ x.T
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(x), dtype=bool)
    intra = float(dist[same & off_diag].mean())
    inter = float(dist[~same].mean())
    return {"nmi": float(normalized_mutual_info_score(labels, clusters)),
            "intra": intra, "inter": inter, "intra_inter_ratio": intra / inter}
