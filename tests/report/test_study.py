"""The "What should have been submitted?" section: recipes named from the config, deltas against the
report's recipe (Welch interval checked with scipy), separability, the Pareto front by hand, and the
choice made on validation only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.config import Config
from benchmark.report import build_report
from benchmark.report.study import pareto_front, recipe, study_configs, study_table

#: (experiment, overrides, test scores per seed, val scores per seed, cost per run)
ROWS = [
    ("study-lite0-frozen", {"backbone": "efficientnet_lite0", "embedding": "backbone"}, [300, 304, 302], [310, 312, 309], 30),
    ("study-lite0-report", {"backbone": "efficientnet_lite0"}, [250, 262, 255], [260, 270, 262], 60),
    ("study-lite0-lr", {"backbone": "efficientnet_lite0", "lr": 0.01}, [258, 249, 262], [262, 259, 268], 61),
    ("study-sface-frozen", {"backbone": "sface", "embedding": "backbone"}, [940, 941, 939], [900, 902, 901], 90),
    ("study-sface-report", {"backbone": "sface"}, [930, 950, 935], [930, 931, 933], 120),
    ("study-r18-random", {"backbone": "resnet18", "weights": "random"}, [60, 70], [65, 66], 20),
]


def _frame() -> pd.DataFrame:
    rows = []
    for exp, over, test, val, cost in ROWS:
        for seed, (t, v) in enumerate(zip(test, val)):
            cfg = Config(experiment=exp, protocol="open-set", seed=seed, **over).to_dict()
            cfg["split"] = str(cfg["split"])
            rows.append({**cfg, "run_id": f"{exp}-s{seed}", "status": "ok", "test/score": float(t),
                         "val/score": float(v), "test/map_at_r": t / 2000, "time/cost_s": float(cost + seed)})
    rows.append({**Config(experiment="closed", seed=0).to_dict(), "split": "x", "run_id": "closed", "status": "ok",
                 "test/score": 999.0, "val/score": 999.0, "time/cost_s": 1.0})  # another protocol: left out
    return pd.DataFrame(rows)


def test_recipe_names_come_from_the_config():
    row = pd.Series(Config().to_dict())
    assert recipe(row) == "report"
    assert recipe(pd.Series({**row, "embedding": "backbone"})) == "frozen"
    assert recipe(pd.Series({**row, "lr": 0.01, "epochs": 5})) == "lr=0.01, epochs=5"
    assert recipe(pd.Series({**row, "augment": True})) == "report"  # old spelling of the default


def test_study_table_deltas_separability_and_front():
    c, runs = study_configs(_frame())
    assert set(runs["run_id"]) == {f"{e}-s{s}" for e, _, t, _, _ in ROWS for s in range(len(t))}
    t = study_table(c)
    by = {(r.backbone, r.recipe): r for r in t.itertuples()}
    assert ("resnet18 (random init: plumbing)", "report") in by
    lr = by[("efficientnet_lite0", "lr=0.01")]
    a, b = np.array([258, 249, 262.]), np.array([250, 262, 255.])
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert lr.delta_vs_report == pytest.approx(a.mean() - b.mean())
    assert lr.delta_ci == pytest.approx((ci.high - ci.low) / 2)
    assert lr.vs_report == "not separable"
    assert by[("efficientnet_lite0", "frozen")].vs_report == "separable"
    assert by[("efficientnet_lite0", "report")].vs_report == "reference"
    assert by[("sface", "frozen")].vs_report == "not separable"  # 940 ± 2 inside 938 ± 26
    assert lr.test_mapr == pytest.approx(a.mean() / 2000)
    half = stats.t.ppf(0.975, 2) * a.std(ddof=1) / np.sqrt(3)
    assert lr.test_score_ci == pytest.approx(half)
    front = pareto_front(t)
    # by hand (mean cost, mean score), plumbing rows excluded: lite0-frozen (31, 302) < sface-frozen (91, 940)
    assert [(r.backbone, r.recipe) for r in front.itertuples()] == [("efficientnet_lite0", "frozen"), ("sface", "frozen")]


def test_section_in_the_report(tmp_path):
    report = build_report(_frame(), tmp_path).read_text()
    part = report.split("## What should have been submitted?")[1].split("\n## ")[0]
    assert "figures/study_score_vs_cost.png" in part and (tmp_path / "figures" / "study_score_vs_cost.png").exists()
    assert "test MAP@R" in part and "not separable" in part
    # validation picks sface-report (val 931.3) although sface-frozen has the higher test score
    assert "picks **study-sface-report**" in part
    table = pd.read_csv(tmp_path / "tables" / "study_backbones_recipes.csv")
    assert len(table) == len(ROWS) and table["pareto"].sum() == 2


def _mapr_by_hand(emb: np.ndarray, labels: np.ndarray) -> float:
    """MAP@R (Musgrave et al. 2020): per query, R = its number of other same-identity items; the mean
    over the first R ranks of precision@k at each relevant rank, divided by R."""
    out = []
    for i in range(len(labels)):
        others = np.delete(np.arange(len(labels)), i)
        ranked = others[np.argsort(-(emb[others] @ emb[i]), kind="stable")]
        rel = labels[ranked] == labels[i]
        r = int(rel.sum())
        if r == 0:
            continue
        hits = rel[:r]
        out.append(float((np.cumsum(hits) / np.arange(1, r + 1))[hits].sum() / r))
    return float(np.mean(out))


def test_mapr_is_filled_from_saved_embeddings(tmp_path):
    """Records written before runs recorded MAP@R get it from their embeddings.npz."""
    from benchmark.results import store
    from synthetic_results import npz_bytes, write_run

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 4)
    for seed in range(2):
        emb = rng.normal(size=(20, 6)) + 2 * rng.normal(size=(5, 6))[labels]
        emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
        cfg = Config(experiment="e", protocol="open-set", seed=seed, backbone="sface", embedding="backbone")
        m = {"test/score": 500.0 + seed, "val/score": 400.0, "time/cost_s": 10.0}
        write_run(tmp_path, f"e-{seed}", cfg, m, npz_bytes(emb, labels, [str(x) for x in labels],
                                                           [f"/x/{i}.png" for i in range(20)]))
        (tmp_path / f"e-{seed}" / "expected").write_text(str(_mapr_by_hand(emb, labels)))
    c, _ = study_configs(store.load(tmp_path))
    expected = [float((tmp_path / f"e-{s}" / "expected").read_text()) for s in range(2)]
    assert c.loc[0, "test/map_at_r"] == pytest.approx(np.mean(expected), abs=1e-6)


@pytest.mark.parametrize("costs, log", [((136, 140, 151), False), ((20, 300, 2000), True)])
def test_the_cost_axis_has_readable_tick_labels(costs, log, tmp_path):
    """Costs within a decade (136–151 s) on a log axis left it without a single tick label."""
    import matplotlib

    matplotlib.use("Agg")
    from benchmark.report.study import figure_score_cost

    t = pd.DataFrame({"backbone": ["efficientnet_lite0"] * 3, "recipe": ["report", "frozen", "lr=0.01"],
                      "cost_s": [float(c) for c in costs], "test_score": [300.0, 310.0, 320.0],
                      "test_score_ci": [np.nan] * 3, "pareto": [True, False, False]})
    fig = figure_score_cost(t, t.iloc[:0])
    fig.savefig(tmp_path / "f.png")  # ticks are placed at draw time
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [tick.get_text() for tick in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
             if tick.get_text() and lo <= tick.get_position()[0] <= hi]
    assert len(shown) >= 2, shown  # at least two numbers to read a cost between
    assert all(float(s) > 0 for s in shown)  # plain numbers (136, 140), not 10^2
    assert (ax.get_xscale() == "log") == log and ("log scale" in ax.get_xlabel()) == log
