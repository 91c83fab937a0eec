"""Ensemble fusion (``benchmark.evaluation.fusion``, ``features.engines.fuse``) on hand-made members,
held to independent numpy computations: minmax per query row then a weighted sum, and the weighted
concatenation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.config import Config
from benchmark.evaluation import fusion
from benchmark.evaluation.evaluate import split_evaluation
from benchmark.features.engines import fuse
from benchmark.models.head import embed
import fusion_by_hand as by_hand

#: feature sizes 128 and 512 (the blocks of the fused embeddings)
MEMBERS = ("sface", "resnet18")
WEIGHTS = (0.6, 0.4)
RANKING = ("top1", "top5", "top10", "map", "map_at_r", "r_precision", "score")


def _cfg(**overrides) -> Config:
    return Config(backbone="ensemble", members=MEMBERS, member_weights=WEIGHTS, embedding="backbone", **overrides)


def _members(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 128)), rng.normal(size=(n, 512))]


def _evaluated(members: list[np.ndarray], weights=WEIGHTS) -> np.ndarray:
    """What a run ranks: the engine's fused member features, normalized (``embed`` without a head)."""
    return embed(None, fuse([torch.from_numpy(m) for m in members], weights)).numpy()


def test_minmax_scores_are_the_weighted_sum_of_each_members_row_scaled_to_0_1():
    q, g = _members(5, seed=1), _members(9, seed=2)
    want = by_hand.minmax(q, g, WEIGHTS)
    got = fusion.scores(_evaluated(q), _evaluated(g), _cfg())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert got.min() >= 0 and got.max() <= sum(WEIGHTS) + 1e-6
    # leave-one-out: each item's row scaled over the split's other items, itself ranked last
    x = _members(8, seed=3)
    loo = fusion.fused_scores(_evaluated(x), _evaluated(x), _cfg(), exclude_self=True)
    want = by_hand.minmax(x, x, WEIGHTS, leave_one_out=True)
    assert np.isneginf(np.diag(loo)).all()
    off = ~np.eye(8, dtype=bool)
    np.testing.assert_allclose(loo[off], want[off], rtol=0, atol=1e-5)


def test_a_member_without_contrast_adds_nothing_and_a_zero_weight_silences_one():
    rng = np.random.default_rng(4)
    q, g = [rng.normal(size=(3, 4)), rng.normal(size=(3, 2))], [rng.normal(size=(6, 4)), rng.normal(size=(6, 2))]
    flat = [q[0], np.ones((3, 2))], [g[0], np.ones((6, 2))]  # every similarity of member 2 equal: 0 after scaling
    np.testing.assert_allclose(fusion.minmax(*flat, [1.0, 5.0]), fusion.minmax([q[0]], [g[0]], [1.0]))
    np.testing.assert_allclose(fusion.minmax(q, g, [0.0, 2.0]), fusion.minmax(q[1:], g[1:], [2.0]))


def test_same_domain_and_query_gallery_metrics_come_from_the_fused_similarity(ranked_oracle):
    x = _members(16, seed=5)
    labels = np.repeat(np.arange(4), 4)
    got, per_item = split_evaluation(_evaluated(x), labels, None, _cfg())
    want = ranked_oracle(by_hand.ranked(by_hand.minmax(x, x, WEIGHTS, leave_one_out=True), labels, labels, True))
    assert per_item is None and got["n_queries"] == want["n_queries"] == 16
    for k in RANKING:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    sides = np.array(["query", "gallery"] * 8)
    q, g = sides == "query", sides == "gallery"
    got, _ = split_evaluation(_evaluated(x), labels, sides, _cfg(query_fraction=0.5))
    scores = by_hand.minmax([m[q] for m in x], [m[g] for m in x], WEIGHTS)
    want = ranked_oracle(by_hand.ranked(scores, labels[q], labels[g]))
    assert got["n_queries"] == want["n_queries"] and got["n_gallery"] == 8
    for k in RANKING:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_concat_is_the_weighted_concatenation_of_the_normalized_members(oracle):
    x = _members(12, seed=6)
    want_emb = by_hand.concat(x, WEIGHTS)
    np.testing.assert_allclose(_evaluated(x), want_emb, rtol=0, atol=1e-6)
    labels = np.repeat(np.arange(3), 4)
    got, _ = split_evaluation(_evaluated(x), labels, None, _cfg(fusion="concat"))
    want = oracle(want_emb, labels)
    for k in RANKING:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
