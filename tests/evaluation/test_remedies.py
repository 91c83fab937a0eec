"""Test-time remedies against independent, brute-force versions of their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.evaluation import remedies
from benchmark.config import Config, ConfigError


def _unit(rng, n, d=8):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_k_reciprocal(q, g, k1, k2, lam):
    """Zhong et al. 2017 from its definitions, with Python sets and dense Jaccard (sum min / sum max)."""
    x = np.concatenate([q, g])
    n = len(x)
    d = np.array([[max(0.0, 2 - 2 * float(x[i] @ x[j])) for j in range(n)] for i in range(n)])
    d = d / d.max(1, keepdims=True)
    nn = [list(np.argsort(d[i], kind="stable")) for i in range(n)]

    def neighbours(i, k):  # N(i, k): i itself and its k nearest
        return set(nn[i][:k + 1])

    def reciprocal(i, k):
        return {j for j in neighbours(i, k) if i in neighbours(j, k)}

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, int(np.around(k1 / 2)))
            if len(rc & r) > 2 / 3 * len(rc):
                expanded |= rc
        e = sorted(expanded)
        w = np.exp(-d[i, e])
        v[i, e] = w / w.sum()
    if k2 > 1:
        v = np.array([v[nn[i][:k2]].mean(0) for i in range(n)])
    out = np.zeros((len(q), len(g)))
    for i in range(len(q)):
        for j in range(len(g)):
            a, b = v[i], v[len(q) + j]
            out[i, j] = (1 - lam) * (1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()) + lam * d[i, len(q) + j]
    return out


@pytest.mark.parametrize("k1,k2,lam", [(4, 2, 0.3), (6, 1, 0.5), (3, 3, 0.0)])
def test_k_reciprocal_equals_its_brute_force_definition(k1, k2, lam):
    rng = np.random.default_rng(k1)
    q, g = _unit(rng, 7), _unit(rng, 11)
    np.testing.assert_allclose(remedies.k_reciprocal(q, g, k1, k2, lam), _brute_k_reciprocal(q, g, k1, k2, lam),
                               atol=1e-10)


def test_query_expansion_and_database_augmentation_equal_their_loops():
    rng = np.random.default_rng(1)
    q, g = _unit(rng, 5), _unit(rng, 9)
    k, alpha = 3, 2.0

    def loop(x, base, self_in_base):
        out = []
        for i, row in enumerate(x):
            sims = [(float(row @ b), j) for j, b in enumerate(base) if not (self_in_base and j == i)]
            best = sorted(sims, key=lambda t: (-t[0], t[1]))[:k]
            new = row + sum(max(s, 0) ** alpha * base[j] for s, j in best)
            out.append(new / np.linalg.norm(new))
        return np.array(out)

    cfg = Config(query_fraction=0.5, rerank="dba+aqe", rerank_args={"k": k, "alpha": alpha})
    g2 = loop(g, g, True)
    np.testing.assert_allclose(remedies.scores(q, g, cfg), loop(q, g2, False) @ g2.T, atol=1e-12)
    np.testing.assert_allclose(remedies.scores(q, g, cfg.replace(rerank="aqe")), loop(q, g, False) @ g.T, atol=1e-12)
    np.testing.assert_allclose(remedies.scores(q, g, cfg.replace(rerank="dba")), q @ loop(g, g, True).T, atol=1e-12)


def test_centering_removes_each_sides_mean_and_plain_scores_are_cosines():
    rng = np.random.default_rng(2)
    q, g = _unit(rng, 6) + 3, _unit(rng, 8) - 1  # each domain offset differently
    q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    cfg = Config(query_fraction=0.5)
    np.testing.assert_allclose(remedies.scores(q, g, cfg), q @ g.T)
    qc, gc = q - q.mean(0), g - g.mean(0)
    expected = (qc / np.linalg.norm(qc, axis=1, keepdims=True)) @ (gc / np.linalg.norm(gc, axis=1, keepdims=True)).T
    np.testing.assert_allclose(remedies.scores(q, g, cfg.replace(centering=True)), expected, atol=1e-12)


def test_bad_rerank_input_is_named():
    with pytest.raises(ConfigError, match=r"rerank_args: rerank=aqe has no parameter.s. k1; its parameters: "
                                          r"k=2 \(an integer in \[1, inf\)\), alpha=3.0"):
        Config(query_fraction=0.5, rerank="aqe", rerank_args={"k1": 3})
    with pytest.raises(ConfigError, match="centering and rerank are query -> gallery remedies"):
        Config(rerank="kreciprocal")


def test_centering_one_query_is_skipped_and_said_not_a_ranking_from_nothing():
    """Issue 23 rule 4: one query minus its own mean is the zero vector (every score 0, the ranking the
    gallery's file order). The registry's degenerate check skips it, says why, and ranks without it."""
    rng = np.random.default_rng(3)
    q, g = _unit(rng, 1), _unit(rng, 7)
    cfg = Config(query_fraction=0.5, centering=True)
    skipped = {}
    np.testing.assert_allclose(remedies.scores(q, g, cfg, skipped), q @ g.T)
    assert list(skipped) == ["centering"] and "at least 2 query embeddings to estimate the query mean (got 1)" in skipped["centering"]
    with pytest.warns(UserWarning, match="test-time remedy centering skipped: centering needs at least 2 query"):
        remedies.scores(q, g, cfg)  # no mapping given: warned, never silent


@pytest.mark.parametrize("case", ["identical-gallery", "one-gallery-dba", "one-gallery-kreciprocal", "two-queries"])
def test_siblings_of_a_degenerate_remedy(case):
    rng = np.random.default_rng(4)
    q, g = _unit(rng, 3), _unit(rng, 5)
    cfg = Config(query_fraction=0.5)
    if case == "identical-gallery":  # no spread on the gallery side: every centred row is zero
        g, cfg = np.repeat(g[:1], 5, axis=0), cfg.replace(centering=True)
    elif case == "one-gallery-dba":
        g, cfg = g[:1], cfg.replace(rerank="dba")
    elif case == "one-gallery-kreciprocal":
        g, cfg = g[:1], cfg.replace(rerank="kreciprocal")
    else:  # two different queries centre fine: nothing skipped, the centred cosine
        cfg = cfg.replace(centering=True)
    skipped = {}
    got = remedies.scores(q, g, cfg, skipped)
    if case == "two-queries":
        assert skipped == {}
        qc, gc = remedies.centre(q, g)
        np.testing.assert_allclose(got, qc @ gc.T)
    else:
        assert len(skipped) == 1 and next(iter(skipped)) in ("centering", "dba", "kreciprocal")
        np.testing.assert_allclose(got, q @ g.T)


def test_a_skipped_remedy_is_recorded_with_the_split():
    from benchmark.evaluation.evaluate import split_evaluation

    rng = np.random.default_rng(5)
    emb = _unit(rng, 6)
    labels = np.array([0, 0, 0, 1, 1, 1])
    sides = np.array(["query", "gallery", "gallery", "gallery", "gallery", "gallery"])
    skipped = {}
    metrics, _ = split_evaluation(emb, labels, sides, Config(query_fraction=0.5, centering=True), skipped)
    assert "centering" in skipped and metrics["n_queries"] == 1
    assert remedies.skip_notes(skipped)[0].startswith("test-time remedy centering skipped: ")


def test_whiten_equals_an_independent_inverse_square_root():
    """CORAL with shrinkage: each side centred, times sqrtm(C + eps I)^-1 of its own covariance, normalized."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(6)
    q, g = _unit(rng, 12) * [3, 1, 1, 0.2, 1, 1, 1, 1] + 2, _unit(rng, 20)
    eps = 0.05

    def independent(x):
        centred = x - x.mean(0)
        w = np.linalg.inv(np.real(sqrtm(np.cov(x, rowvar=False) + eps * np.eye(x.shape[1]))))
        out = centred @ w
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    cfg = Config(query_fraction=0.5, rerank="whiten", rerank_args={"eps": eps})
    np.testing.assert_allclose(remedies.scores(q, g, cfg), independent(q) @ independent(g).T, atol=1e-10)


def test_whiten_of_one_row_is_skipped_and_said():
    rng = np.random.default_rng(7)
    q, g = _unit(rng, 1), _unit(rng, 6)
    skipped = {}
    np.testing.assert_allclose(remedies.scores(q, g, Config(query_fraction=0.5, rerank="whiten"), skipped), q @ g.T)
    assert list(skipped) == ["whiten"] and "at least 2 query embeddings" in skipped["whiten"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_q=st.integers(2, 8), n_g=st.integers(2, 12), d=st.integers(2, 10))
def test_whiten_tends_to_centering_as_eps_grows(seed, n_q, n_g, d):
    """(C + eps I)^(-1/2) -> eps^(-1/2) I: with eps = 1e6 the rankings are centering's."""
    rng = np.random.default_rng(seed)
    q, g = _unit(rng, n_q, d) + rng.normal(size=d), _unit(rng, n_g, d)
    rank = lambda qq, gg: np.argsort(-(qq @ gg.T), axis=1, kind="stable")  # noqa: E731
    np.testing.assert_array_equal(rank(*remedies.whiten(q, g, 1e6)), rank(*remedies.centre(q, g)))
