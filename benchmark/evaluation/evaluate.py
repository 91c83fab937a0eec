"""The retrieval numbers of one evaluated split, same-domain or query -> gallery.

Same-domain (today's default): every item queries all the others (``metrics.retrieval_metrics``).
Query -> gallery (``cfg.query_gallery``: a gallery style, real other-domain images or an explicit
``query_fraction``): the split's ``side`` column divides its items; every query ranks the gallery
side only, after the config's test-time remedies (``benchmark.evaluation.remedies``). An ensemble with
``fusion: minmax`` ranks either way by its members' fused similarity (``benchmark.evaluation.fusion``),
from the whole similarity matrix. The facts say what the numbers were measured on: ``n_queries``
(scored), ``n_gallery``, ``positives`` (mean gallery items of the query's identity). Its label-free
validators (``split_validators``) are a run's final numbers only: training's per-epoch validation skips them.
"""

from __future__ import annotations

import numpy as np

from benchmark.config import Config
from benchmark.evaluation import fusion, validators
from benchmark.evaluation.metrics import from_matches, per_query_scores, query_gallery_matches, retrieval_metrics
from benchmark.results import schema


def split_evaluation(embeddings, labels, sides: np.ndarray | None, cfg: Config,
                     skipped: dict[str, str] | None = None) -> tuple[dict, np.ndarray | None]:
    """(retrieval metrics and split facts of one split's embeddings, each item's own score as a query)
    for ``sides`` (its items' side), or (…, None) for same-domain leave-one-out. The per-item scores
    (NaN for gallery items and queries without a same-identity gallery item) let two configurations
    measured on the same people compare query by query: a paired difference is far tighter than
    either score's interval. ``skipped``: receives each test-time remedy skipped on this input, and why."""
    labels = np.asarray(labels)
    same_domain = sides is None or not cfg.query_gallery
    if same_domain and not fusion.fused(cfg):
        return retrieval_metrics(embeddings, labels) | schema.split_facts(labels), None
    emb = embeddings.detach().cpu().numpy() if hasattr(embeddings, "detach") else np.asarray(embeddings)
    if same_domain:  # every item queries the others: itself scores -inf, the last column
        matches = query_gallery_matches(fusion.fused_scores(emb, emb, cfg, exclude_self=True), labels, labels)
        return from_matches(matches[:, :-1], labels=labels) | schema.split_facts(labels), None
    q, g = sides == "query", sides == "gallery"
    matches = query_gallery_matches(fusion.scores(emb[q], emb[g], cfg, skipped), labels[q], labels[g])
    out = from_matches(matches, labels=labels[q])
    scores, valid = per_query_scores(matches)
    per_item = np.full(len(labels), np.nan)
    per_item[np.flatnonzero(q)[valid]] = scores
    per_identity = dict(zip(*np.unique(labels[g], return_counts=True)))
    positives = np.array([per_identity.get(label, 0) for label in labels[q]], dtype=np.float64)
    return out | {"n_gallery": int(g.sum()), "positives": float(positives.mean()) if len(positives) else float("nan"),
                  "identities": len(per_identity)}, per_item  # the gallery's: fewer than 2 and every match is right


def split_validators(embeddings, sides: np.ndarray | None, cfg: Config) -> tuple[dict, list[str]]:
    """(``validator/<name>`` -> value or None, one line per validator that could not be computed) of
    one query -> gallery split (``benchmark.evaluation.validators``). A same-domain split records none:
    the validators measure how two domains meet, and the default runs should carry no warning about it."""
    if sides is None or not cfg.query_gallery:
        return {}, []
    emb = np.asarray(embeddings)
    values, notes = validators.measure(emb[sides == "query"], emb[sides == "gallery"], cfg)
    return {validators.PREFIX + k: v for k, v in values.items()}, notes


def split_metrics(embeddings, labels, sides: np.ndarray | None, cfg: Config) -> dict[str, float]:
    """Retrieval metrics and split facts of one split's embeddings (``split_evaluation``); a skipped
    remedy is not repeated each epoch: the run's final evaluation records it."""
    return split_evaluation(embeddings, labels, sides, cfg, skipped={})[0]


def query_scores(embeddings, labels, sides: np.ndarray, cfg: Config) -> np.ndarray:
    """Each item's own score as a query (``split_evaluation``), from saved embeddings and a config (a
    skipped remedy was recorded with the run)."""
    return split_evaluation(embeddings, labels, sides, cfg, skipped={})[1]
