"""Every table's numbers equal a direct pandas computation on the synthetic results set."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.report import prepare, published, tables
from benchmark.results.schema import Unsupported

from synthetic_results import ok_closed

METRICS = ["test/top1", "test/top5", "test/top10", "test/map", "test/score", "time/cost_s"]


@pytest.fixture(scope="module")
def configs(synthetic):
    return prepare(synthetic).configs


@pytest.fixture(scope="module")
def means(synthetic):
    """Per-experiment means of the successful closed-set runs."""
    return ok_closed(synthetic).groupby("experiment").mean(numeric_only=True)


def test_table1_is_the_baseline_row_per_backbone(synthetic, configs):
    t = tables.table1(configs).set_index("backbone")
    runs = ok_closed(synthetic)
    base = runs[(runs["lr"] == 0.001) & (runs["epochs"] == 3) & (runs["batch_size"] == 32) & (runs["augment"] == "report")
                & runs["normalize"] & (runs["embedding"] == "head")]
    expected = base.groupby("backbone")[METRICS].mean()
    assert list(t.index) == ["efficientnet_b0", "vit_b_16", "resnet50"]  # the report's order
    pd.testing.assert_frame_equal(t[METRICS], expected.loc[t.index], check_names=False)
    assert t.loc["efficientnet_b0", "n"] == 3 and t.loc["vit_b_16", "n"] == 1
    x = base.loc[base["backbone"] == "efficientnet_b0", "test/score"]
    assert t.loc["efficientnet_b0", "test/score_ci"] == pytest.approx(stats.sem(x) * stats.t.ppf(0.975, len(x) - 1))
    assert np.isnan(t.loc["vit_b_16", "test/score_ci"])
    s, c = expected["test/score"], expected["time/cost_s"]
    assert t["score_pct_of_best"].to_dict() == pytest.approx((100 * s / s.max()).to_dict())
    assert t["speedup_vs_slowest"].to_dict() == pytest.approx((c.max() / c).to_dict())
    md = tables.table1_markdown(tables.table1(configs))
    assert "Relative performance" in md and "±" in md and "faster" in md
    assert "ViT-B/16 has the highest score" in tables.read_table1(tables.table1(configs), configs)


def test_table2_is_the_top10_by_mean_test_score(synthetic, configs, means):
    t = tables.table2(configs)
    top = means["test/score"].sort_values(ascending=False).head(10)
    assert list(t["config"]) == list(top.index)
    assert list(t["rank"]) == list(range(1, 11))
    assert t["test/score"].to_numpy() == pytest.approx(top.to_numpy())
    for m in ("test/top1", "test/top5", "test/top10", "test/map"):
        assert t[m].to_numpy() == pytest.approx(means.loc[top.index, m].to_numpy())
    assert t["time_min"].to_numpy() == pytest.approx(means.loc[top.index, "time/cost_s"].to_numpy() / 60)
    assert t["vs_best"].iloc[0] == "best"
    assert set(t["vs_best"]) <= {"best", "not separable", "separable", "not judged"}
    assert "NOT separable" in tables.read_table2(t)
    assert len(tables.table2(configs, k=3)) == 3


def test_lr_sweep_figure1_data(configs, means):
    t = tables.lr_sweep(configs)
    assert len(t) == 18 and t["line"].nunique() == 6
    main = t[t["main"]]
    assert set(main["epochs"]) == {3} and set(main["line"]) == {"EfficientNet-B0", "ViT-B/16", "ResNet50"}
    for _, r in t.iterrows():
        assert r["test/score"] == pytest.approx(means.loc[r["config"], "test/score"])
    assert "LR 0.001 is best for every architecture" in tables.read_lr(t)


def test_a_setting_shared_by_the_whole_sweep_sets_no_line_apart(synthetic):
    # e.g. `benchmark sweep sweep.yaml --set weights=random`: every run differs from the default weights
    t = tables.lr_sweep(prepare(synthetic.assign(weights="random")).configs)
    assert set(t.loc[t["main"], "line"]) == {"EfficientNet-B0", "ViT-B/16", "ResNet50"}
    assert not t["line"].str.contains("random").any()


def test_epoch_sweep_figure2_data(configs, means):
    t = tables.epoch_sweep(configs)
    assert list(t["epochs"]) == [1, 2, 3, 5]
    assert list(t["config"]) == [f"efficientnet_b0-lr0.001-ep{e}" for e in (1, 2, 3, 5)]
    assert t["test/score"].to_numpy() == pytest.approx(means.loc[t["config"], "test/score"].to_numpy())
    assert "peaks at 2 epochs" in tables.read_epochs(t)


def test_histories_average_seeds(synthetic, configs):
    t = tables.epoch_sweep(configs)
    h = tables.histories(t)
    runs = ok_closed(synthetic)
    dirs = runs.loc[runs["experiment"] == "efficientnet_b0-lr0.001-ep2", "run_dir"]
    expected = pd.concat(pd.read_csv(f"{d}/history.csv") for d in dirs).groupby("epoch")["val/score"].mean()
    got = h[h["config"] == "efficientnet_b0-lr0.001-ep2"].set_index("epoch")["val/score"]
    assert got.to_numpy() == pytest.approx(expected.to_numpy())
    assert set(h.groupby("config")["epoch"].max()) == {1, 2, 3, 5}


def test_ablations_are_deltas_from_the_baseline(configs, means):
    t = tables.ablations(configs).set_index("config")
    assert set(t.index) == {"efficientnet_b0-bs8", "efficientnet_b0-bs64", "efficientnet_b0-no-normalize",
                            "efficientnet_b0-no-augment"}
    assert set(t["reference"]) == {"efficientnet_b0-lr0.001-ep3"}
    base = means.loc["efficientnet_b0-lr0.001-ep3", "test/score"]
    for exp, r in t.iterrows():
        assert r["delta"] == pytest.approx(means.loc[exp, "test/score"] - base)
        assert r["delta_pct"] == pytest.approx(100 * (means.loc[exp, "test/score"] - base) / base)
        assert math.isnan(r["delta_ci"])  # the variants have one seed
    assert set(t["ablation"]) == {
        "batch size 8", "batch size 64", "no normalization", "no augmentation"}
    assert list(t["delta"]) == sorted(t["delta"])


def test_efficiency_figure4_data(configs, means, synthetic):
    t = tables.efficiency(configs).set_index("backbone")
    by_arch = ok_closed(synthetic).groupby(["backbone", "experiment"])["score_per_minute"].mean().groupby("backbone")
    assert t["score_per_minute"].to_dict() == pytest.approx(by_arch.mean().to_dict())
    assert t["n_configs"].to_dict() == by_arch.size().to_dict()
    assert t.loc["efficientnet_b0", "ratio_vs_lowest"] == pytest.approx(by_arch.mean().max() / by_arch.mean().min())


def test_pareto_figure5_data(configs, means):
    t = tables.pareto(configs)
    assert len(t) == 24
    for _, r in t.iterrows():
        dominated = ((means["time/cost_s"] <= r["time/cost_s"]) & (means["test/score"] >= r["test/score"])
                     & (means.index != r["config"])).any()
        assert r["pareto"] == (not dominated)


def test_failed_runs_table(synthetic):
    t = tables.failed_runs(prepare(synthetic).failed)
    assert list(t["run_id"]) == ["resnet50-lr0.1-ep5-seed1"]
    assert t["error"].iloc[0].startswith("FloatingPointError")


def test_published_numbers_are_transcribed():
    p = published.load()
    assert len(p[p["ref"] == "Table 1"]) == 18 and len(p[p["ref"] == "Table 2"]) == 60
    values = dict(zip(p["item"], p["published"]))
    assert values["ViT-B/16: Score"] == 443.1 and values["#1 ViT-B/16 LR 0.001 5 ep: Time (min)"] == 19.7
    for item, v in {"EfficientNet-B0 score at LR 0.001": 436, "EfficientNet-B0 score at LR 0.1": 403,
                    "EfficientNet-B0 score at 2 epochs (peak)": 453.6, "batch size 8 vs 32 (points)": -30.4,
                    "batch size 64 vs 32 (points)": -25.4, "no normalization (points)": -31.0,
                    "no augmentation (points)": -5.6}.items():
        assert values[item] == v


def test_reproduction_beside_ours(configs, means):
    t = published.reproduction(configs)
    assert t["ours"].notna().all()
    row = lambda item: t[t["item"] == item].iloc[0]  # noqa: E731
    r = row("ViT-B/16: Score")
    assert r["ours"] == pytest.approx(means.loc["vit_b_16-lr0.001-ep3", "test/score"])
    assert r["diff"] == pytest.approx(r["ours"] - 443.1)
    r = row("batch size 8 vs 32 (points)")
    assert r["ours"] == pytest.approx(means.loc["efficientnet_b0-bs8", "test/score"]
                                      - means.loc["efficientnet_b0-lr0.001-ep3", "test/score"])
    r = row("#1 ViT-B/16 LR 0.001 5 ep: Time (min)")
    assert r["ours"] == pytest.approx(means.loc["vit_b_16-lr0.001-ep5", "time/cost_s"] / 60)
    r = row("EfficientNet-B0 change LR 0.001 → 0.1 (%)")
    a, b = means.loc["efficientnet_b0-lr0.001-ep3", "test/score"], means.loc["efficientnet_b0-lr0.1-ep3", "test/score"]
    assert r["ours"] == pytest.approx(100 * (b - a) / a)
    assert r["diff_pct"] == pytest.approx(100 * (r["ours"] + 7.6) / 7.6)
    # a missing experiment is a note, not a crash
    part = published.reproduction(configs[configs["label"] != "efficientnet_b0-bs8"])
    assert "efficientnet_b0-bs8 not in the results" in part.loc[part["item"] == "batch size 8 vs 32 (points)",
                                                               "note"].iloc[0]


def test_unsupported_on_demo_like_set(demo_df):
    c = prepare(demo_df).configs
    assert len(tables.table1(c)) == 1 and len(tables.table2(c)) == 3
    with pytest.raises(Unsupported):
        tables.epoch_sweep(c)
    with pytest.raises(Unsupported):
        published.reproduction(c)
    abl = tables.ablations(c)
    assert list(abl["config"]) == ["demo-no-normalize"] and list(abl["reference"]) == ["demo-lr0.01-ep3"]


def test_the_search_reading_of_one_search_compares_nothing():
    """"All 1 searches found the same best validation score" read as a comparison that was never made."""
    one = pd.DataFrame([{"search": "bayes", "method": "bayes", "runs": 4, "stopped": 0, "failed": 0, "minutes": 1.0,
                         "best_val": 500.0, "best_at_run": 2, "best_at_min": 0.5, "best_test": 480.0,
                         "best_run": "r2"}])
    text = tables.read_search(one)
    assert "One search: nothing to compare it with." in text and "All 1" not in text
    two = pd.concat([one, one.assign(search="grid", method="grid")], ignore_index=True)
    assert "All 2 searches found the same best validation score" in tables.read_search(two)
