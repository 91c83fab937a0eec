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


def _two_domains(seed, people=8, d=12, n_q=2, n_g=10, noise=0.6, shift=1.0):
    """Queries and gallery of the same people, each domain with its own offset: (q, g, q ids, g ids)."""
    rng = np.random.default_rng(seed)
    ids = rng.normal(size=(people, d))
    side = lambda n, off: ids.repeat(n, 0) + noise * rng.normal(size=(people * n, d)) + off  # noqa: E731
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    q, g = unit(side(n_q, shift * rng.normal(size=d))), unit(side(n_g, shift * rng.normal(size=d)))
    return q, g, np.arange(people).repeat(n_q), np.arange(people).repeat(n_g)


def _mean_average_precision(s, q_ids, g_ids):
    """Independent of benchmark's metrics: per query, the mean of precision at each relevant rank."""
    out = []
    for row, who in zip(s, q_ids):
        relevant = g_ids[np.argsort(-row, kind="stable")] == who
        out.append(np.mean(np.cumsum(relevant)[relevant] / (np.flatnonzero(relevant) + 1)))
    return float(np.mean(out))


def test_selftrain_equals_kmeans_and_a_written_out_supervised_contrastive_loop():
    """The same seeded KMeans on the centred sides, then the same full-batch Adam steps on a linear map
    (identity at the start), with the supervised contrastive loss written out here (not the library's):
    -mean over anchors with a positive of mean over positives p of log(exp(s_ip/T) / sum_{k!=i} exp(s_ik/T)),
    s the cosine similarity."""
    import torch
    from sklearn.cluster import KMeans

    q, g, _, _ = _two_domains(0, people=4, d=6, n_q=2, n_g=4)
    args = {"clusters": None, "per_cluster": 6.0, "epochs": 7, "lr": 0.05, "T": 0.2, "seed": 3, "centred": True}
    qc, gc = q - q.mean(0), g - g.mean(0)
    x = np.concatenate([qc / np.linalg.norm(qc, axis=1, keepdims=True), gc / np.linalg.norm(gc, axis=1, keepdims=True)])
    labels = KMeans(n_clusters=4, n_init=3, random_state=3).fit_predict(x)  # 24 items / 6 per cluster
    y = torch.as_tensor(labels)
    data = torch.as_tensor(np.concatenate([q, g]))
    w = torch.nn.Parameter(torch.eye(6, dtype=torch.float64))
    opt = torch.optim.Adam([w], lr=0.05)
    same, eye = y[:, None] == y[None, :], torch.eye(len(y), dtype=torch.bool)
    positive = same & ~eye
    for _ in range(7):
        opt.zero_grad()
        z = torch.nn.functional.normalize(data @ w, dim=1)
        logits = (z @ z.T / 0.2).masked_fill(eye, -torch.inf)
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        per_anchor = -(log_prob.masked_fill(~positive, 0)).sum(1) / positive.sum(1).clamp(min=1)
        per_anchor[positive.sum(1) > 0].mean().backward()
        opt.step()
    out = (data @ w).detach().numpy()
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    cfg = Config(query_fraction=0.5, rerank="selftrain", rerank_args={k: v for k, v in args.items() if k != "clusters"})
    got_q, got_g, final = remedies.embeddings(q, g, cfg)
    assert final is None
    np.testing.assert_allclose(got_q, out[:8], atol=1e-9)
    np.testing.assert_allclose(got_g, out[8:], atol=1e-9)
    # deterministic for a fixed seed; unit norm; shapes
    again_q, again_g = remedies.selftrain(q, g, **args)
    np.testing.assert_array_equal(again_q, got_q)
    np.testing.assert_array_equal(again_g, got_g)
    assert got_q.shape == q.shape and got_g.shape == g.shape
    np.testing.assert_allclose(np.linalg.norm(np.concatenate([got_q, got_g]), axis=1), 1, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 4])
def test_selftrain_raises_retrieval_under_a_per_domain_shift(seed):
    """Two domains, each shifted by its own offset: the default selftrain ranks the same people higher
    than plain cosine (mean average precision computed here), alone and chained before kreciprocal."""
    q, g, q_ids, g_ids = _two_domains(seed)
    cfg = Config(query_fraction=0.5, rerank="selftrain")
    plain = _mean_average_precision(q @ g.T, q_ids, g_ids)
    trained = _mean_average_precision(remedies.scores(q, g, cfg), q_ids, g_ids)
    assert trained > plain + 0.1, (plain, trained)
    chained = remedies.scores(q, g, cfg.replace(rerank="selftrain+kreciprocal", rerank_args={"k1": 6, "k2": 2}))
    assert chained.shape == (len(q), len(g))


@pytest.mark.parametrize("args, said", [
    ({"clusters": 2}, "it needs more distinct embeddings than clusters (clusters=2 gives 2 clusters for 2 distinct"),
    ({"per_cluster": 10.0}, "it needs at least 2 pseudo-label clusters (4 embeddings / per_cluster=10 gives 0)"),
    ({"per_cluster": 1.0}, "it needs more distinct embeddings than clusters (4 embeddings / per_cluster=1 gives 4"),
])
def test_selftrain_without_two_clusters_is_skipped_and_said(args, said):
    rng = np.random.default_rng(8)
    q, g = _unit(rng, 2), _unit(rng, 2)
    if "clusters" in args:  # four rows, two of them distinct
        q, g = np.repeat(q[:1], 2, axis=0), np.repeat(q[1:], 2, axis=0)
    skipped = {}
    cfg = Config(query_fraction=0.5, rerank="selftrain", rerank_args={**args, "centred": False})
    np.testing.assert_allclose(remedies.scores(q, g, cfg, skipped), q @ g.T)
    assert list(skipped) == ["selftrain"] and skipped["selftrain"].startswith(said), skipped
    assert remedies.skip_notes(skipped)[0].startswith("test-time remedy selftrain skipped: it needs")


def test_selftrain_of_one_query_to_centre_is_skipped_and_said():
    rng = np.random.default_rng(9)
    q, g = _unit(rng, 1), _unit(rng, 30)
    skipped = {}
    remedies.scores(q, g, Config(query_fraction=0.5, rerank="selftrain"), skipped)
    assert "at least 2 query embeddings" in skipped["selftrain"] and "rerank_args.centred=false" in skipped["selftrain"]


@pytest.mark.parametrize("args, message", [
    ({"clusters": 1}, "rerank_args.clusters=1 is not valid: must be an integer in [2, inf), or null"),
    ({"per_cluster": 0.5}, "rerank_args.per_cluster=0.5 is not valid: must be a number in [1, inf)"),
    ({"epochs": 0}, "rerank_args.epochs=0 is not valid: must be an integer in [1, inf)"),
    ({"lr": 0}, "rerank_args.lr=0 is not valid: must be a number in (0, inf)"),
    ({"T": -1}, "rerank_args.T=-1 is not valid: must be a number in (0, inf)"),
    ({"centred": "yes"}, "rerank_args.centred='yes' is not valid: must be true or false"),
])
def test_selftrain_arguments_outside_their_domain_are_one_line(args, message):
    with pytest.raises(ConfigError) as err:
        Config(query_fraction=0.5, rerank="selftrain+kreciprocal", rerank_args=args)
    assert str(err.value) == message
