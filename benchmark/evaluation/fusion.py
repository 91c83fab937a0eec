"""How an ensemble (``backbone: ensemble``) ranks: its members' embeddings, fused.

An ensemble's embeddings are its members' side by side (``benchmark.features.engines.fuse``: member
m's block is its L2-normalized embedding times sqrt(w_m), the row normalized again). With ``fusion:
concat`` that row is the embedding: every metric and remedy uses it as any other. With ``fusion:
minmax`` the row only carries the members, and ranking uses the fused similarity (``minmax``): for
each query, each member's cosine similarities to the gallery (same-domain: to the split's other
items) min-max scaled over the query's row to [0, 1], times the member's weight, summed. The scaling
is blind to a block's positive scale, so reading a member's cosines off its block is exact. A fused
similarity is not an embedding: the remedies that need embeddings (centering, rerank) are refused
with it when the config is made, and such a run records no embedding-structure metrics (NMI, intra/inter).
"""

from __future__ import annotations

import numpy as np

from benchmark.config import ENSEMBLE
from benchmark.evaluation import remedies


def member_weights(cfg) -> list[float]:
    """Each member's weight: ``member_weights``, or equal ones."""
    return list(cfg.member_weights) or [1.0] * len(cfg.members)


def fused(cfg) -> bool:
    """``cfg`` ranks by its members' fused similarity, not by an embedding."""
    return cfg.backbone == ENSEMBLE and cfg.fusion == "minmax"


def minmax(queries: list[np.ndarray], gallery: list[np.ndarray], weights, exclude_self: bool = False) -> np.ndarray:
    """The fused similarity [n_query, n_gallery] of the members' embeddings (member m: ``queries[m]``,
    ``gallery[m]``): each member's similarities min-max scaled over each query's row to [0, 1] (a row
    of equal values: 0), times its weight, summed. ``exclude_self``: query i is gallery item i; it is
    left out of its row's scaling and scores -inf (ranked last)."""
    out = 0.0
    for q, g, w in zip(queries, gallery, weights):
        s = np.asarray(q, dtype=np.float64) @ np.asarray(g, dtype=np.float64).T
        keep = ~np.eye(*s.shape, dtype=bool) if exclude_self else np.ones(s.shape, dtype=bool)
        low = s.min(1, initial=np.inf, where=keep, keepdims=True)
        span = s.max(1, initial=-np.inf, where=keep, keepdims=True) - low
        out = out + w * (s - low) / np.where(span > 0, span, 1.0)
    if exclude_self:
        np.fill_diagonal(out, -np.inf)
    return out


def blocks(embeddings, cfg) -> list[np.ndarray]:
    """Each member's block of an ensemble's embeddings (its width: the member backbone's feature size)."""
    from benchmark.models.backbones import check_backbone  # torch: for a minmax ensemble only

    x = np.asarray(embeddings)
    dims = [check_backbone(name).dim for name in cfg.members]
    if sum(dims) != x.shape[1]:
        raise ValueError(f"embeddings of width {x.shape[1]} are not members {', '.join(cfg.members)} side by side "
                         f"({' + '.join(map(str, dims))})")
    return np.split(x, np.cumsum(dims)[:-1], axis=1)


def fused_scores(queries, gallery, cfg, exclude_self: bool = False) -> np.ndarray:
    """``minmax`` of an ensemble's embeddings (``blocks``) with its weights."""
    return minmax(blocks(queries, cfg), blocks(gallery, cfg), member_weights(cfg), exclude_self)


def scores(queries, gallery, cfg, skipped: dict[str, str] | None = None) -> np.ndarray:
    """The similarity [n_query, n_gallery] query -> gallery ranking uses: the fused one (``fused``),
    else cosine after the config's test-time remedies (``remedies.scores``, ``skipped`` as there)."""
    if fused(cfg):
        return fused_scores(queries, gallery, cfg)
    return remedies.scores(queries, gallery, cfg, skipped)
