"""The retrieval numbers of one evaluated split, same-domain or query -> gallery.

Same-domain (today's default): every item queries all the others (``metrics.retrieval_metrics``).
Query -> gallery (``cfg.query_gallery``: a gallery style, real other-domain images or an explicit
``query_fraction``): the split's ``side`` column divides its items; every query ranks the gallery
side only, after the config's test-time remedies (``benchmark.rerank``). The facts say what the
numbers were measured on: ``n_queries`` (scored), ``n_gallery``, ``positives`` (mean gallery items
of the query's identity).
"""

from __future__ import annotations

import numpy as np

from benchmark import rerank
from benchmark.config import Config
from benchmark.metrics import per_query_scores, query_gallery_matches, query_gallery_metrics, retrieval_metrics
from benchmark.results import schema


def split_metrics(embeddings, labels, sides: np.ndarray | None, cfg: Config) -> dict[str, float]:
    """Retrieval metrics and split facts of one split's embeddings (``sides``: its items' side, or
    None for same-domain leave-one-out)."""
    labels = np.asarray(labels)
    if sides is None or not cfg.query_gallery:
        return retrieval_metrics(embeddings, labels) | schema.split_facts(labels)
    emb = embeddings.detach().cpu().numpy() if hasattr(embeddings, "detach") else np.asarray(embeddings)
    q, g = sides == "query", sides == "gallery"
    out = query_gallery_metrics(rerank.scores(emb[q], emb[g], cfg), labels[q], labels[g])
    per_identity = dict(zip(*np.unique(labels[g], return_counts=True)))
    positives = np.array([per_identity.get(label, 0) for label in labels[q]], dtype=np.float64)
    return out | {"n_gallery": int(g.sum()), "positives": float(positives.mean()) if len(positives) else float("nan"),
                  "identities": len(per_identity)}  # the gallery's: fewer than 2 and every match is right


def query_scores(embeddings, labels, sides: np.ndarray, cfg: Config) -> np.ndarray:
    """Each item's own score (0-1000) as a query of a query -> gallery split, after the config's
    test-time remedies, as ``split_metrics`` ranks it; NaN for gallery items and for queries without a
    same-identity gallery item. Two configurations measured on the same people then compare query by
    query (a paired difference is far tighter than either score's interval)."""
    emb, labels = np.asarray(embeddings), np.asarray(labels)
    q, g = sides == "query", sides == "gallery"
    scores, valid = per_query_scores(query_gallery_matches(rerank.scores(emb[q], emb[g], cfg), labels[q], labels[g]))
    out = np.full(len(labels), np.nan)
    out[np.flatnonzero(q)[valid]] = scores
    return out
