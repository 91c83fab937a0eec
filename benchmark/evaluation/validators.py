"""Unsupervised validators: numbers about a query -> gallery split computed from its embeddings alone,
no label read, so they can be measured on the competition's unlabeled test set and choose a
configuration there (``benchmark choose --by test/validator/NAME``) without using a test label.

``VALIDATORS`` is the one registry: each entry declares its parameters (``benchmark.params.Param``),
whether a higher value is the better one, and when it cannot be computed. ``measure`` computes every
entry on the query and gallery embeddings that ranking compares: after the config's test-time remedies
that transform embeddings (centering, whiten, dba, aqe; a score-producing remedy such as k-reciprocal
leaves them as they are), L2-normalized, cosine similarities. A run records them as
``<split>/validator/<name>`` (``benchmark.evaluation.evaluate.split_validators``); one that cannot be
computed is null with its reason, never 0.

- ``snd``, soft neighbourhood density (Saito et al., ICCV 2021, "Tune it the Right Way: Unsupervised
  Validation of Domain Adaptation via Soft Neighborhood Density"): over the union X of queries and
  gallery, p_ij = softmax over j != i of x_i.x_j / T; SND = mean over i of -sum_j p_ij log p_ij.
  Higher = denser neighbourhoods (the paper's choice rule).
- ``entropy``: mean over queries of the entropy of softmax over the gallery of q_i.g_j / T: how
  spread a query's belief over the gallery is (lower = more confident matches).
- ``cycle``: cross-domain cycle consistency, the fraction of queries whose nearest gallery item has
  that query as its own nearest query (mutual nearest neighbours; ties: the lower index, as ranking).
- ``agreement`` (ensembles only, ``MEMBER_VALIDATORS``): over each pair of members, the fraction of
  queries whose nearest gallery item the two members' own embeddings agree on, averaged over pairs:
  members that agree on an unlabeled test set are more likely right together.

Each is computed in blocks of rows of about ``CHUNK`` similarities (never an N x N matrix), in float32
(the precision a record stores embeddings in) with float64 sums. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmark.evaluation import fusion, remedies
from benchmark.params import Param, defaults

#: similarity entries per block of rows (x ~20 bytes of working memory each: ~80 MB)
CHUNK = 1 << 22


def _blocks(n_rows: int, n_cols: int, chunk: int):
    """(start, stop) of consecutive row blocks holding about ``chunk`` similarities each (at least one row)."""
    step = max(1, chunk // max(n_cols, 1))
    return ((a, min(n_rows, a + step)) for a in range(0, n_rows, step))


def _entropies(logits: np.ndarray) -> np.ndarray:
    """The entropy (nats) of softmax over each row of ``logits``; a -inf entry has probability 0."""
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    total = e.sum(1, dtype=np.float64)
    return np.log(total) - (e * np.where(np.isfinite(z), z, 0)).sum(1, dtype=np.float64) / total


def snd(queries: np.ndarray, gallery: np.ndarray, T: float, chunk: int = CHUNK) -> float:
    """Soft neighbourhood density of the union of queries and gallery (module docstring)."""
    x = np.concatenate([queries, gallery])
    total = 0.0
    for a, b in _blocks(len(x), len(x), chunk):
        logits = x[a:b] @ x.T / np.float32(T)
        logits[np.arange(b - a), np.arange(a, b)] = -np.inf  # not its own neighbour
        total += float(_entropies(logits).sum())
    return total / len(x)


def entropy(queries: np.ndarray, gallery: np.ndarray, T: float, chunk: int = CHUNK) -> float:
    """Mean entropy of each query's softmax over the gallery (module docstring)."""
    total = 0.0
    for a, b in _blocks(len(queries), len(gallery), chunk):
        total += float(_entropies(queries[a:b] @ gallery.T / np.float32(T)).sum())
    return total / len(queries)


def cycle(queries: np.ndarray, gallery: np.ndarray, chunk: int = CHUNK) -> float:
    """Fraction of queries that are their nearest gallery item's nearest query (module docstring): one
    pass over query blocks gives each query's best gallery item and each gallery item's best query."""
    nearest = np.empty(len(queries), dtype=np.int64)
    best = np.full(len(gallery), -np.inf, dtype=np.float32)
    back = np.zeros(len(gallery), dtype=np.int64)
    for a, b in _blocks(len(queries), len(gallery), chunk):
        sims = queries[a:b] @ gallery.T
        nearest[a:b] = sims.argmax(1)
        top = sims.max(0)
        better = top > best  # strictly: an earlier (lower) query keeps a tie
        best[better], back[better] = top[better], sims.argmax(0)[better] + a
    return float(np.mean(back[nearest] == np.arange(len(queries))))


@dataclass(frozen=True)
class Validator:
    """One label-free validator: ``fn(queries, gallery, **params)`` -> a number, from L2-normalized
    float32 embeddings; ``higher``: a higher value is the better configuration (what ``choose --by``
    ranks with); ``degenerate(queries, gallery)``: why it cannot be computed on this input (None: it can)."""

    fn: Callable
    params: dict[str, Param]
    doc: str
    higher: bool
    degenerate: Callable


def _few(side: str, need: int, what: str) -> Callable:
    """``degenerate`` of a validator that needs ``need`` rows of ``side`` (one gallery item: every
    softmax is 1, entropy 0; one query: it is every item's nearest query): a number that measures nothing."""
    def why(q, g):
        n = {"query": len(q), "gallery": len(g), "query and gallery": len(q) + len(g)}[side]
        return f"it needs at least {need} {side} embeddings {what} (got {n})" if n < need else None
    return why


def _each(*whys: Callable) -> Callable:
    """``degenerate`` of several needs: the first that is not met."""
    def why(q, g):
        return next((reason for reason in (w(q, g) for w in whys) if reason), None)
    return why


_T = {"T": Param(float, 0.05, low=0, open_low=True, doc="softmax temperature (the SND paper's 0.05)")}
VALIDATORS: dict[str, Validator] = {
    "snd": Validator(snd, _T, "soft neighbourhood density of queries and gallery together (Saito et al. 2021)",
                     higher=True, degenerate=_few("query and gallery", 3, "so that each has 2 others")),
    "entropy": Validator(entropy, _T, "mean entropy of each query's softmax over the gallery", higher=False,
                         degenerate=_few("gallery", 2, "to spread a query's softmax over")),
    "cycle": Validator(cycle, {}, "fraction of queries that are their nearest gallery item's nearest query",
                       higher=True, degenerate=_each(_few("query", 2, "to compete for a gallery item"),
                                                    _few("gallery", 1, "to be a query's nearest"))),
}
def agreement(queries: list[np.ndarray], gallery: list[np.ndarray], chunk: int = CHUNK) -> float:
    """Mean over member pairs of the fraction of queries whose nearest gallery item both members pick
    (``queries[m]``, ``gallery[m]``: member m's embeddings; module docstring)."""
    tops = []
    for q, g in zip(queries, gallery):
        top = np.empty(len(q), dtype=np.int64)
        for a, b in _blocks(len(q), len(g), chunk):
            top[a:b] = (q[a:b] @ g.T).argmax(1)
        tops.append(top)
    return float(np.mean([np.mean(x == y) for i, x in enumerate(tops) for y in tops[i + 1:]]))


#: validators of an ensemble's members, each from its own embeddings (``fusion.blocks``); recorded
#: for ensembles only, whatever their fusion
MEMBER_VALIDATORS: dict[str, Validator] = {
    "agreement": Validator(agreement, {}, "fraction of queries whose nearest gallery item the members agree on, "
                           "mean over member pairs", higher=True, degenerate=_few("query", 1, "to rank")),
}
#: every validator a record can hold (what ``choose --by`` and the report read)
RECORDED: dict[str, Validator] = {**VALIDATORS, **MEMBER_VALIDATORS}
#: how a record names a validator after its split: ``<split>/validator/<name>``
PREFIX = "validator/"


def unavailable(why: str) -> tuple[dict[str, None], list[str]]:
    """Every validator null, and the one line that says why."""
    return dict.fromkeys(VALIDATORS), [f"validators {', '.join(VALIDATORS)} not computed (null): {why}"]


def measure(queries, gallery, cfg) -> tuple[dict[str, float | None], list[str]]:
    """Every validator of ``queries`` -> ``gallery`` under ``cfg`` (the embeddings ranking compares:
    after the remedies that return embeddings, ``remedies.embeddings``), with its declared
    parameters' defaults: (name -> value or None, one line per validator that could not be computed).
    An ensemble also gets ``MEMBER_VALIDATORS``, from its members' own embeddings."""
    members, member_notes = _members(queries, gallery, cfg)
    if fusion.fused(cfg):
        values, notes = unavailable("fusion=minmax ranks by a fused similarity, not an embedding they could be "
                                    "read from")
        return values | members, notes + member_notes
    if not (np.isfinite(queries).all() and np.isfinite(gallery).all()):
        return unavailable("the embeddings contain NaN or inf")
    q, g, _ = remedies.embeddings(queries, gallery, cfg, skipped={})  # skips are recorded by the ranking
    q, g = (remedies._normalize(x).astype(np.float32) for x in (q, g))
    values, notes = {}, []
    for name, v in VALIDATORS.items():
        why = v.degenerate(q, g)
        values[name] = None if why else v.fn(q, g, **defaults(v.params))
        notes += [f"validator {name} not computed (null): {why}"] if why else []
    return values | members, notes + member_notes


def _members(queries, gallery, cfg) -> tuple[dict[str, float | None], list[str]]:
    """``MEMBER_VALIDATORS`` of an ensemble (nothing for one backbone), from each weighted member's block
    of the embeddings as extracted (before any remedy)."""
    if cfg.backbone != fusion.ENSEMBLE:
        return {}, []
    weights = fusion.member_weights(cfg)
    qs, gs = (([b for b, w in zip(fusion.blocks(x, cfg), weights) if w > 0]) for x in (queries, gallery))
    values, notes = {}, []
    for name, v in MEMBER_VALIDATORS.items():
        why = "it needs two members of positive weight" if len(qs) < 2 else v.degenerate(queries, gallery)
        if why is None and not all(np.isfinite(x).all() for x in (*qs, *gs)):
            why = "the embeddings contain NaN or inf"
        values[name] = None if why else v.fn(qs, gs)
        notes += [f"validator {name} not computed (null): {why}"] if why else []
    return values, notes
