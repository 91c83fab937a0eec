"""Confidence intervals, configurations, separability and the protocol audit against independent
scipy/numpy/pandas computations."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.report import prepare
from benchmark.results.stats import aggregate, diff_ci, pooled_sd, protocol_audit, separability, t_ci

from synthetic_results import SEEDED, ok_closed


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_t_ci_matches_scipy_interval(n):
    x = np.random.default_rng(n).normal(400, 10, n)
    mean, hw, count = t_ci(x)
    lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert count == n and mean == pytest.approx(x.mean())
    assert (mean - hw, mean + hw) == pytest.approx((lo, hi))
    lo90, hi90 = stats.t.interval(0.90, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert t_ci(x, 0.90)[1] == pytest.approx((hi90 - lo90) / 2)


def test_t_ci_single_and_missing_values():
    assert t_ci([5.0])[0] == 5.0 and math.isnan(t_ci([5.0])[1])
    assert t_ci([1.0, np.nan, 3.0])[:1] == (2.0,) and t_ci([1.0, np.nan, 3.0])[2] == 2
    assert t_ci([])[2] == 0
    assert t_ci([2.0, 2.0, 2.0])[1] == 0.0
    # identical seeds (a deterministic configuration): exactly no spread, not the float noise of
    # x.std() (491.623 x 3 gave a half-width of 1.7e-13, printed by `choose` as such)
    assert t_ci([491.62303664921467] * 3) == (491.62303664921467, 0.0, 3)


def test_diff_ci_is_welch_interval():
    rng = np.random.default_rng(3)
    a, b = rng.normal(450, 5, 4), rng.normal(440, 12, 3)
    d, hw = diff_ci(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(a.mean() - b.mean())
    assert (d - hw, d + hw) == pytest.approx((ci.low, ci.high))
    assert math.isnan(diff_ci(a, [440.0])[1])


def test_configurations_average_seeds_with_t_interval(synthetic):
    data = prepare(synthetic)
    runs = ok_closed(synthetic)
    for exp, n in SEEDED.items():
        x = runs.loc[runs["experiment"] == exp, "test/score"].to_numpy()
        row = data.configs[data.configs["label"] == exp].iloc[0]
        assert row["n"] == n == len(x)
        assert row["test/score"] == pytest.approx(x.mean())
        lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert row["test/score_ci"] == pytest.approx((hi - lo) / 2)
        assert sorted(row["seeds"]) == list(range(n))
    single = data.configs[data.configs["n"] == 1]
    assert single["test/score_ci"].isna().all()
    assert len(data.configs) == 24 and len(data.configs_all) == 48


def test_failed_runs_are_excluded(synthetic):
    data = prepare(synthetic)
    assert list(data.failed["run_id"]) == ["resnet50-lr0.1-ep5-seed1"]
    assert "nan" in data.failed["error"].iloc[0]
    assert "resnet50-lr0.1-ep5-seed1" not in set(data.runs["run_id"])
    row = data.configs[data.configs["label"] == "resnet50-lr0.1-ep5"].iloc[0]
    assert row["n"] == 1


def test_setting_defaults_to_closed_set_and_can_be_chosen(synthetic):
    assert prepare(synthetic).setting["protocol"] == "closed-set"
    data = prepare(synthetic, protocol="open-set")
    assert data.setting["protocol"] == "open-set" and len(data.configs) == 24
    assert set(data.configs["protocol"]) == {"open-set"}
    assert any("open-set" in n for n in prepare(synthetic).notes)


def test_configs_with_same_experiment_get_distinct_ids(synthetic):
    ca = prepare(synthetic).configs_all
    assert ca["config"].is_unique
    assert (ca["label"] == ca["experiment"]).all()  # labels stay plain within a setting
    assert "efficientnet_b0-lr0.001-ep3 [protocol=open-set]" in set(ca["config"])


def _mk(rows):
    return pd.DataFrame([{"run_id": f"{e}-s{s}", "status": "ok", "experiment": e, "seed": s, "backbone": "resnet18",
                          "test/score": v, "val/score": v} for e, s, v in rows])


def test_separability_rule():
    far = aggregate(_mk([("a", 0, 500), ("a", 1, 502), ("a", 2, 501), ("b", 0, 400), ("b", 1, 401), ("b", 2, 399)]))
    sep = separability(far)
    assert sep.best == "a" and sep.runner_up == "b" and sep.separable is True and sep.tied == []
    close = aggregate(_mk([("a", 0, 500), ("a", 1, 480), ("b", 0, 495), ("b", 1, 485), ("c", 0, 300)]))
    sep = separability(close)
    assert sep.separable is False and sep.tied == ["b"] and sep.unjudged == ["c"]
    assert "NOT separable" in sep.text
    single = aggregate(_mk([("a", 0, 500), ("b", 0, 499)]))
    sep = separability(single)
    assert sep.separable is None and "single seed" in sep.text


def test_separability_on_synthetic_matches_interval_overlap(synthetic):
    configs = prepare(synthetic).configs
    sep = separability(configs)
    runs = ok_closed(synthetic)
    means = runs.groupby("experiment")["test/score"].mean().sort_values(ascending=False)
    best, second = means.index[:2]
    assert (sep.best, sep.runner_up) == (best, second)

    def interval(e):
        x = runs.loc[runs["experiment"] == e, "test/score"]
        return stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    (blo, _), (_, shi) = interval(best), interval(second)
    assert sep.separable is bool(blo > shi) and sep.separable is False


def test_pooled_sd(synthetic):
    configs = prepare(synthetic).configs
    runs = ok_closed(synthetic)
    g = runs[runs["experiment"].isin(SEEDED)].groupby("experiment")["test/score"]
    expected = math.sqrt(sum(((x - x.mean()) ** 2).sum() for _, x in g) / sum(len(x) - 1 for _, x in g))
    sd, k = pooled_sd(configs)
    assert k == 3 and sd == pytest.approx(expected)


def test_protocol_audit_spearman_gap_and_pick(synthetic):
    data = prepare(synthetic)
    audit = protocol_audit(data.configs_all).set_index("protocol")
    assert set(audit.index) == {"closed-set", "open-set"}
    ok = synthetic[synthetic["status"] == "ok"]
    for proto, runs in ok.groupby("protocol"):
        m = runs.groupby("experiment")[["val/score", "test/score"]].mean()
        rho = stats.spearmanr(m["val/score"], m["test/score"]).statistic
        row = audit.loc[proto]
        assert row["n_configs"] == 24
        assert row["spearman_rho"] == pytest.approx(rho)
        assert row["gap_mean"] == pytest.approx((m["val/score"] - m["test/score"]).mean())
        assert row["val_pick"] == m["val/score"].idxmax() and row["test_best"] == m["test/score"].idxmax()
        assert row["picks_right"] == (m["val/score"].idxmax() == m["test/score"].idxmax())
        assert row["regret"] == pytest.approx(m["test/score"].max() - m.loc[m["val/score"].idxmax(), "test/score"])


def test_protocol_audit_with_too_few_configurations():
    audit = protocol_audit(aggregate(_mk([("a", 0, 500), ("b", 0, 400)])))
    assert len(audit) == 1 and math.isnan(audit["spearman_rho"].iloc[0])
