"""benchmark.evaluation.metrics against independent computations: a numpy ranking + scikit-learn AP (ties
included), pytorch-metric-learning's AccuracyCalculator (no ties), and hand-worked examples; the
block-wise computation with blocks of one row, a few rows and all rows."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from benchmark.evaluation import metrics
from benchmark.evaluation.metrics import embedding_metrics, from_matches, retrieval_metrics
from benchmark.evaluation.scoring import competition_score

KEYS = ("top1", "top5", "top10", "map", "map_at_r", "r_precision", "score")

#: (backend, query rows per block): auto in blocks of one row, a few rows, all rows
BACKENDS = [("auto", 1), ("auto", 7), ("auto", None), ("torch", None), pytest.param(
    "faiss", None, marks=pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed"))]


def _clustered(rng, n_ids=12, per_id=(1, 8), dim=16, noise=0.9):
    """Embeddings around one center per identity (so metrics are neither 0 nor 1), with some
    singleton identities (queries without any positive)."""
    centers = rng.normal(size=(n_ids, dim))
    sizes = rng.integers(per_id[0], per_id[1] + 1, size=n_ids)
    sizes[:2] = 1  # at least two lone identities
    labels = np.repeat(np.arange(n_ids), sizes)
    rng.shuffle(labels)
    x = centers[labels] + noise * rng.normal(size=(len(labels), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def _with_duplicates(rng):
    """Exact duplicate rows (identical scores), some duplicated across identities."""
    x, labels = _clustered(rng, n_ids=10)
    pick = rng.integers(0, len(x), size=60)
    x = np.concatenate([x, x[pick]])
    labels = np.concatenate([labels, np.where(rng.random(60) < 0.3, rng.integers(0, 10, 60), labels[pick])])
    perm = rng.permutation(len(x))
    return x[perm], labels[perm]


def _rounded(rng):
    """Low-precision embeddings (multiples of 1/4): scores are exact in float32 and tie a lot."""
    x, labels = _clustered(rng, n_ids=15, dim=6, noise=1.2)
    return np.round(x * 4) / 4, labels


DATA = {"clustered": _clustered, "duplicates": _with_duplicates, "rounded": _rounded}


@pytest.mark.parametrize(("backend", "rows"), BACKENDS)
@pytest.mark.parametrize("kind", list(DATA))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_numpy_and_sklearn(kind, seed, backend, rows, oracle):
    x, labels = DATA[kind](np.random.default_rng(seed))
    if kind != "clustered":  # the test is only meaningful if there really are ties
        s = x.astype(np.float64) @ x.T.astype(np.float64)
        np.fill_diagonal(s, np.nan)
        assert any(len(np.unique(r[~np.isnan(r)])) < len(r) - 1 for r in s)
    got = retrieval_metrics(x, labels, backend=backend, chunk=rows * len(x) if rows else metrics.CHUNK)
    want = oracle(x, labels)
    assert got["n_queries"] == want["n_queries"]
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def test_ties_break_towards_lower_gallery_index():
    # query 0 ties exactly between item 1 (other identity) and item 2 (same identity): item 1 ranks first
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, -1.0]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1])
    m = retrieval_metrics(x, labels)
    # query 0: ranking [1, 2, 3] -> relevant [F, T, F]: top1 miss, AP 1/2
    # query 1: ranking [2, 0, 3] (scores 1, 0, -1): relevant [F, F, T]: AP 1/3
    # query 2: ranking [1, 0, 3]: relevant [F, T, F]: AP 1/2
    # query 3: ranking [0, 1, 2] (scores 0, -1, -1): relevant [F, T, F]: AP 1/2
    assert m["top1"] == 0.0
    assert m["top5"] == 1.0
    assert m["map"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    # R = 1 everywhere and no query has its positive first: R-precision and MAP@R are 0
    assert (m["r_precision"], m["map_at_r"]) == (0.0, 0.0)


def test_map_at_r_and_r_precision_hand_worked_with_ties():
    # query 0 (identity 0, R = 2: items 2 and 4) sees scores 1: [1] 0.6, [2] 0.6, [3] 0.6, [4] 0.0 ...
    x = np.array([[1, 0], [0.6, 0.8], [0.6, 0.8], [0.6, -0.8], [0, 1], [0, -1]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 0, 2])
    m = retrieval_metrics(x, labels, chunk=1)
    # every ranking by hand (score descending, ties -> lower index), relevant items marked *:
    # q0 (R=2): 1 .6 | *2 .6 | 3 .6 | *4 0 | 5 0      -> R-prec 1/2, MAP@R (1/2)/2, AP (1/2 + 2/4)/2
    # q1 (R=1): 2 1 | 4 .8 | 0 .6 | *3 -.28 | 5 -.8   -> 0, 0, AP 1/4
    # q2 (R=2): 1 1 | *4 .8 | *0 .6 | 3 -.28 | 5 -.8  -> R-prec 1/2, MAP@R (1/2)/2, AP (1/2 + 2/3)/2
    # q3 (R=1): 5 .8 | 0 .6 | *1 -.28 | 2 -.28 | 4 -.8 -> 0, 0, AP 1/3 (the tie puts 1 before 2)
    # q4 (R=2): 1 .8 | *2 .8 | *0 0 | 3 -.8 | 5 -1    -> R-prec 1/2, MAP@R 1/4, AP (1/2 + 2/3)/2
    #   (the tie puts 1 before 2: the other order would give R-prec 1, MAP@R 1)
    # q5: identity 2 alone: not a query
    assert m["n_queries"] == 5
    assert m["r_precision"] == pytest.approx((1 / 2 + 0 + 1 / 2 + 0 + 1 / 2) / 5)
    assert m["map_at_r"] == pytest.approx((1 / 4 + 0 + 1 / 4 + 0 + 1 / 4) / 5)
    assert m["map"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1 / 4 + (1 / 2 + 2 / 3) / 2 + 1 / 3
                                      + (1 / 2 + 2 / 3) / 2) / 5)


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_pytorch_metric_learning(seed):
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    x, labels = _clustered(np.random.default_rng(seed), n_ids=20, dim=32)
    # PML's FaissKNN (L2) assumes each query is its own nearest neighbour: no duplicate rows here
    assert len(np.unique(x, axis=0)) == len(x)
    calc = pml.AccuracyCalculator(include=("precision_at_1", "mean_average_precision", "r_precision",
                                           "mean_average_precision_at_r"), k=None, device=torch.device("cpu"))
    ref = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))  # reference=query, self excluded
    got = retrieval_metrics(x, labels, chunk=200)
    assert got["top1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert got["map"] == pytest.approx(ref["mean_average_precision"], abs=1e-6)
    assert got["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert got["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert 0 < got["map_at_r"] < got["r_precision"] < 1  # neither trivial nor equal by accident


def test_queries_without_positive_are_excluded():
    x, labels = _clustered(np.random.default_rng(3), n_ids=8)
    lone = np.flatnonzero(np.bincount(labels)[labels] == 1)
    assert len(lone) >= 2
    m = retrieval_metrics(x, labels)
    assert m["n_queries"] == len(labels) - len(lone)
    # the lone items stay in the gallery of the others, but are never averaged in as queries
    matches = np.stack([labels[_rank(x, i)] == labels[i] for i in range(len(x))])
    keep = np.ones(len(labels), bool)
    keep[lone] = False
    hits1 = matches[keep, 0]
    assert m["top1"] == pytest.approx(hits1.mean())
    assert m["top1"] != pytest.approx(hits1.sum() / len(labels))  # a 0 for lone queries would show


def _rank(x, i):
    s = (x.astype(np.float64) * x[i].astype(np.float64)).sum(1)
    others = np.delete(np.arange(len(x)), i)
    return others[np.lexsort((others, -s[others]))]


def test_from_matches_hand_worked():
    matches = np.array([
        [0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # first hit at 2: AP = (1/2 + 2/4) / 2
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # AP 1
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no positive: not a query
        [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],  # first hit at 7: top10 only, AP 1/7
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],  # first hit at 11: counts for nothing but mAP (1/11)
    ], dtype=bool)
    m = from_matches(matches)
    assert m["n_queries"] == 4
    assert m["top1"] == pytest.approx(1 / 4)
    assert m["top5"] == pytest.approx(2 / 4)
    assert m["top10"] == pytest.approx(3 / 4)
    assert m["map"] == pytest.approx((0.5 + 1 + 1 / 7 + 1 / 11) / 4)
    assert m["score"] == pytest.approx(600 / 4 + 300 * 2 / 4 + 100 * 3 / 4)
    # n_relevant larger than the ranked positives (a truncated ranking): AP is divided by it
    m2 = from_matches(matches[:2], n_relevant=np.array([4, 1]))
    assert m2["map"] == pytest.approx(((1 / 2 + 2 / 4) / 4 + 1) / 2)


def test_competition_score_weights():
    assert competition_score({1: 1.0, 5: 1.0, 10: 1.0}) == 1000
    assert competition_score({1: 0.5, 5: 0.8, 10: 0.9}) == pytest.approx(600 * 0.5 + 300 * 0.8 + 100 * 0.9)
    x, labels = _clustered(np.random.default_rng(5))
    m = retrieval_metrics(x, labels)
    assert m["score"] == pytest.approx(600 * m["top1"] + 300 * m["top5"] + 100 * m["top10"])
    assert 0 < m["score"] < 1000


def test_no_valid_query_gives_zeros():
    x = np.eye(4, dtype=np.float32)
    m = retrieval_metrics(x, np.arange(4))
    assert np.isnan(m.pop("score_sample_ci"))  # no query: no interval (null in the record)
    assert m == {"top1": 0.0, "top5": 0.0, "top10": 0.0, "map": 0.0, "map_at_r": 0.0, "r_precision": 0.0,
                 "score": 0.0, "n_queries": 0}


def test_perfect_and_worst_rankings():
    # two tight identities far apart: perfect retrieval
    x = np.array([[1, 0.01], [1, -0.01], [1, 0], [-1, 0.01], [-1, -0.01]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = retrieval_metrics(x, [0, 0, 0, 1, 1])
    assert (m["top1"], m["map"], m["score"]) == (1.0, 1.0, 1000.0)
    # every item's only positive is the farthest of the three others
    x = np.array([[1, 0], [0.99, 0.14], [-1, 0], [-0.99, -0.14]], dtype=np.float32)
    m = retrieval_metrics(x, [0, 1, 0, 1])
    assert (m["top1"], m["top5"]) == (0.0, 1.0)
    assert m["map"] == pytest.approx(1 / 3)


def test_embedding_metrics_independent():
    x, labels = _clustered(np.random.default_rng(4), n_ids=6, per_id=(3, 6))
    m = embedding_metrics(x, labels)
    x64 = x.astype(np.float64)
    dist = 1 - x64 @ x64.T
    intra = [dist[i, j] for i in range(len(x)) for j in range(len(x)) if i != j and labels[i] == labels[j]]
    inter = [dist[i, j] for i in range(len(x)) for j in range(len(x)) if labels[i] != labels[j]]
    assert m["intra"] == pytest.approx(np.mean(intra))
    assert m["inter"] == pytest.approx(np.mean(inter))
    assert m["intra_inter_ratio"] == pytest.approx(np.mean(intra) / np.mean(inter))
    assert 0 <= m["nmi"] <= 1
    # well separated identities cluster (almost: k-means' random init may merge two) perfectly
    centers = np.eye(6)[labels] + 1e-3 * np.random.default_rng(0).normal(size=(len(labels), 6))
    assert embedding_metrics(centers, labels)["nmi"] > 0.9


def test_intra_inter_from_sums_any_labels_and_norms():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 5))  # not normalized: the sums must not assume unit norm
    labels = np.array(["b", "a", "c", "d"])[rng.integers(0, 4, 40)]
    dist = 1 - x @ x.T
    same = labels[:, None] == labels[None, :]
    m = embedding_metrics(x, labels)
    assert m["intra"] == pytest.approx(dist[same & ~np.eye(40, dtype=bool)].mean(), rel=1e-9)
    assert m["inter"] == pytest.approx(dist[~same].mean(), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 3])
def test_nmi_equals_pytorch_metric_learning_with_the_same_kmeans(seed):
    """PML's NMI (faiss k-means, then scikit-learn's NMI) with the k-means settings we use."""
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    from pytorch_metric_learning.utils.inference import FaissKMeans

    x, labels = _clustered(np.random.default_rng(seed), n_ids=15, per_id=(4, 9), dim=8, noise=0.7)
    kmeans = FaissKMeans(niter=20, seed=seed, min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    calc = pml.AccuracyCalculator(include=("NMI",), kmeans_func=kmeans, device=torch.device("cpu"))
    ref = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))["NMI"]
    got = embedding_metrics(x, labels, seed=seed)["nmi"]
    assert got == pytest.approx(ref, abs=1e-12)
    assert 0.3 < got < 1


def test_oracle_bounds_are_exact_far_from_ties_and_cover_near_ties(oracle_bounds):
    """``within_oracle`` (the tests' check of a run's metrics): far from ties its bounds coincide, so it
    is an exact comparison that a wrong number fails; a near-tie (here 1e-7 apart, under float32
    rounding) is counted both ways, as another CPU's kernels may rank it."""
    x, labels = _clustered(np.random.default_rng(0))
    got = {f"t/{k}": v for k, v in retrieval_metrics(x, labels).items()}
    lo, hi = oracle_bounds(got, "t/", x, labels)
    assert all(lo[k] == hi[k] for k in KEYS)
    with pytest.raises(AssertionError, match="top1"):
        oracle_bounds({**got, "t/top1": got["t/top1"] + 0.01}, "t/", x, labels)
    # query 0: a positive and a negative 1e-7 apart in score, both above the other positive
    near = np.array([[1, 0], [0.6, 0.8], [0.6 + 1e-7, 0.8 - 7.5e-8], [0, 1]], dtype=np.float64)
    lo, hi = oracle_bounds({f"t/{k}": v for k, v in retrieval_metrics(near, [0, 0, 1, 0]).items()}, "t/",
                           near, [0, 0, 1, 0])
    assert lo["top1"] < hi["top1"]


# --- query -> gallery retrieval (issue 17) ------------------------------------------------------------
def _reference_query_gallery(scores, q_labels, g_labels, metrics_of_rankings):
    """Per query: canonical ranking (score descending, lower gallery index first), then the oracle's
    definitions (scikit-learn's average precision, R-precision and MAP@R item by item)."""
    return metrics_of_rankings(np.asarray(g_labels)[np.lexsort((np.arange(len(s)), -s))] == label
                               for s, label in zip(scores, q_labels))


@pytest.mark.parametrize("ties", [False, True])
def test_query_gallery_metrics_match_an_independent_computation(ties, ranked_oracle):
    from benchmark.evaluation.metrics import query_gallery_metrics

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(25, 40))
    if ties:  # coarse scores: many exact ties, broken by the lower gallery index
        scores = np.round(scores * 2) / 2
    q_labels, g_labels = rng.integers(0, 9, 25), rng.integers(0, 8, 40)  # label 8: no gallery item
    got = query_gallery_metrics(scores, q_labels, g_labels)
    expected = _reference_query_gallery(scores, q_labels, g_labels, ranked_oracle)
    assert got["n_queries"] == expected["n_queries"] == int(np.isin(q_labels, g_labels).sum()) < 25
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


# --- the score's test-sample interval (a cluster bootstrap over the split's people) ---------------------
def test_sample_interval_is_scipys_paired_bootstrap_of_people():
    """Resampling people (their queries' score sum and count together) and taking the ratio is
    scipy.stats.bootstrap's paired percentile interval of sum(scores) / sum(counts)."""
    from scipy import stats

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(40), rng.integers(1, 6, 40))
    scores = np.where(rng.random(len(labels)) < 0.3 + 0.5 * (labels % 3 == 0), 1000.0, 0.0)
    sums = np.bincount(labels, weights=scores)
    counts = np.bincount(labels).astype(float)
    ref = stats.bootstrap((sums, counts), lambda s, c, axis=-1: s.sum(axis) / c.sum(axis), paired=True,
                          vectorized=True, method="percentile", n_resamples=20000, random_state=0)
    want = (ref.confidence_interval.high - ref.confidence_interval.low) / 2
    assert metrics.sample_interval(scores, labels, n_boot=20000) == pytest.approx(want, rel=0.05)
    assert metrics.sample_interval(scores, labels) == metrics.sample_interval(scores, labels)  # seeded
    assert metrics.sample_interval(np.full(20, 1000.0), np.arange(20) % 5) == 0.0  # every query right
    assert np.isnan(metrics.sample_interval(scores[:3], np.zeros(3)))  # one person: nothing to resample


@pytest.mark.parametrize("backend, rows", BACKENDS)
def test_every_ranking_path_gives_the_same_sample_interval(backend, rows):
    """Leave-one-out (blockwise ranks, or a full faiss/torch ranking) and the ranked-matrix path read
    the same per-query scores: the same interval, from each query's own score and identity."""
    rng = np.random.default_rng(0)
    x, labels = _clustered(rng)
    got = retrieval_metrics(x, labels, backend=backend, chunk=rows * len(x) if rows else metrics.CHUNK)
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]
    matches = labels[order] == labels[:, None]
    valid = matches.any(1)
    best = np.where(valid, matches.argmax(1) + 1, np.inf)[valid]
    per_query = 600 * (best <= 1) + 300 * (best <= 5) + 100 * (best <= 10)
    assert per_query.mean() == pytest.approx(got["score"])
    assert got["score_sample_ci"] == pytest.approx(metrics.sample_interval(per_query, labels[valid]), abs=1e-9)
    assert got["score_sample_ci"] > 0
