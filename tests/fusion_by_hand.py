"""An ensemble's fusion computed by hand (numpy loops, no code of the package): the independent side of
the fusion tests (tests/evaluation/test_fusion.py, tests/test_ensemble.py)."""

from __future__ import annotations

import numpy as np


def minmax(queries: list[np.ndarray], gallery: list[np.ndarray], weights, leave_one_out: bool = False) -> np.ndarray:
    """Query by query, member by member: cosines to the gallery (itself left out for leave-one-out),
    min-max scaled over the row to [0, 1], times the member's weight, summed; itself -inf."""
    n_q, n_g = len(queries[0]), len(gallery[0])
    out = np.zeros((n_q, n_g))
    for i in range(n_q):
        others = [j for j in range(n_g) if not (leave_one_out and j == i)]
        for q, g, w in zip(queries, gallery, weights):
            cos = np.array([q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j]) for j in others])
            out[i, others] += w * (cos - cos.min()) / (cos.max() - cos.min())
        if leave_one_out:
            out[i, i] = -np.inf
    return out


def concat(members: list[np.ndarray], weights) -> np.ndarray:
    """Each member L2-normalized, times sqrt(its weight), side by side, normalized again."""
    x = np.concatenate([np.sqrt(w) * m / np.linalg.norm(m, axis=1, keepdims=True) for m, w in zip(members, weights)], 1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ranked(scores: np.ndarray, query_labels, gallery_labels, leave_one_out: bool = False) -> list[np.ndarray]:
    """Each query's ranked relevance: score descending, ties by the lower index, itself left out."""
    out = []
    for i, s in enumerate(scores):
        idx = np.array([j for j in range(len(s)) if not (leave_one_out and j == i)])
        order = idx[np.lexsort((idx, -s[idx]))]
        out.append(np.asarray(gallery_labels)[order] == np.asarray(query_labels)[i])
    return out
