"""The report reads right: a reader can tell a finding from a bug (issue 10, section 3). On a
demo-like study (one architecture, a frozen-features run, a diverged run, validation and test of
different difficulty), each defect once seen in the ORL demo report is checked on the artefact."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from benchmark.config import resolve
from benchmark.report import build_report, figures, prepare, tables
from benchmark.results import store
from synthetic_results import make_images, metrics_for, npz_bytes, write_run

#: test facts of the 32 saved test embeddings (8 people x 4: leave-one-out); a record whose metrics
#: count other test items than it saved is damaged
FACTS = {"val/n_queries": 80, "val/n_gallery": 79, "val/positives": 1.0,
         "test/n_queries": 32, "test/n_gallery": 31, "test/positives": 3.0}
SCORES = {"demo-lr0.001-ep3": 700.0, "demo-lr0.01-ep3": 760.0, "demo-lr0.01-ep5": 740.0, "demo-lr0.1-ep3": 650.0,
          "demo-no-normalize": 720.0, "demo-frozen-features": 600.0}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("reading")
    emb, labels, ids, paths = make_images(root / "images")
    blob = npz_bytes(emb, labels, ids, paths)
    rng = np.random.default_rng(3)
    for name, score in SCORES.items():
        cfg = resolve(name)
        m = metrics_for(score, score + 180, "efficientnet_lite0", cfg.epochs, rng) | FACTS
        m["diverged"] = float(name == "demo-lr0.1-ep3")
        write_run(root / "runs", name, cfg, m, blob)
    # the 3- and 5-epoch runs of one recipe share their first 3 epochs exactly (same seed)
    for name, epochs in (("demo-lr0.01-ep3", 3), ("demo-lr0.01-ep5", 5)):
        pd.DataFrame({"epoch": range(1, epochs + 1), "train/loss": [3.0, 2.0, 1.5, 1.2, 1.1][:epochs],
                      "val/loss": 1.0, "val/score": [800.0, 900.0, 950.0, 940.0, 930.0][:epochs]}) \
            .to_csv(root / "runs" / name / "history.csv", index=False)
    return root / "runs"


@pytest.fixture(scope="module")
def configs(demo_dir):
    return prepare(store.load(demo_dir)).configs


def test_axis_labels_are_words_not_internal_keys(configs):
    sweep = tables.epoch_sweep(configs)
    for fig in (figures.figure1_lr(tables.lr_sweep(configs)), figures.figure2_epochs(sweep, tables.histories(sweep)),
                figures.figure3_ablations(tables.ablations(configs)),
                figures.figure4_efficiency(tables.efficiency(configs), configs),
                figures.figure5_tradeoff(tables.pareto(configs))):
        for ax in fig.axes:
            for label in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()):
                assert not re.search(r"\w+/\w+|\.csv", label), (fig.get_suptitle(), label)


def test_figure5_legend_only_names_what_is_drawn(configs):
    t = tables.pareto(configs)
    (ax,) = figures.figure5_tradeoff(t).axes
    front = t["pareto"].sum()
    (entry,) = [t.get_text() for t in ax.get_legend().get_texts() if "areto" in t.get_text()]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == entry]
    assert len(line.get_xdata()) == front
    if front > 1:
        assert entry == "Pareto front" and line.get_linestyle() == "--"
    else:
        assert entry.startswith("Pareto-optimal") and line.get_linestyle() == "None"
    one = configs[configs["label"] == "demo-lr0.01-ep3"]  # a single configuration: a front of one point
    (ax,) = figures.figure5_tradeoff(tables.pareto(one)).axes
    assert "Pareto front" not in [t.get_text() for t in ax.get_legend().get_texts()]


def test_figure2_no_series_hides_under_another(configs):
    t = tables.epoch_sweep(configs)
    fig = figures.figure2_epochs(t, tables.histories(t))
    lines = [ln for ln in fig.axes[1].get_lines() if ln.get_label().endswith(")")]
    assert len(lines) == 2
    points = [set(zip(np.round(ln.get_xdata(), 6), ln.get_ydata())) for ln in lines]
    assert not points[0] & points[1], "identical epochs are drawn on top of each other"
    for ln in lines:  # offset sideways by less than half an epoch: still readable as epochs
        assert np.abs(ln.get_xdata() - np.round(ln.get_xdata())).max() < 0.5


def test_figure6_says_k_of_possible(configs):
    ex = figures.retrieval_example(configs)
    # make_images: 4 images per identity in the saved test embeddings -> 3 others for any query
    assert ex["possible"] == ex["possible_total"] == 3
    assert f"{ex['hits']} of 3 possible correct" in figures.figure6_example(ex).texts[0].get_text()


def test_one_architecture_has_no_relative_performance(configs):
    md = tables.table1_markdown(tables.table1(configs))
    assert "Relative performance" not in md and "slowest" not in md and "100.0%" not in md


def test_table2_no_lr_or_epochs_without_a_trained_head_and_diverged_flagged(configs):
    t = tables.table2(configs)
    frozen = t[t["config"] == "demo-frozen-features"].iloc[0]
    assert not frozen["trained_head"] and pd.isna(frozen["lr"]) and pd.isna(frozen["epochs"])
    row = next(r for r in tables.table2_markdown(t).splitlines() if "demo-frozen-features" in r)
    assert "| no head | no head |" in row
    assert "demo-lr0.1-ep3 ⚠ diverged" in tables.table2_markdown(t)
    assert t.loc[t["config"] == "demo-lr0.01-ep3", "lr"].item() == 0.01


@pytest.mark.slow
def test_report_says_what_each_split_is_measured_on(demo_dir, tmp_path):
    text = build_report(store.load(demo_dir), tmp_path).read_text()
    measured = ("Measured on: validation 80 queries, each against a gallery of 79 holding 1 same-identity item "
                "on average; test 32 queries, each against a gallery of 31 holding 3 same-identity items")
    n_tables = text.count("<sub>Data: ")
    assert text.count(measured) == n_tables >= 5  # beside every metric table
    assert text.count("Validation and test are different retrieval tasks here: a validation query has 1 "
                      "same-identity item among 79, a test query 3 among 31.") == 2  # overview + audit
    assert "**1 run(s) diverged**" in text and "demo-lr0.1-ep3" in text


def test_one_architecture_efficiency_claims_no_ranking(configs):
    t = tables.efficiency(configs)
    assert "most efficient" not in tables.read_efficiency(t) and "no architecture comparison" in tables.read_efficiency(t)
    assert "× lowest" not in tables.efficiency_markdown(t)


def test_efficiency_reading_says_when_a_few_cheap_configurations_lift_the_mean():
    """Figure 4's reading called Lite0 "the most efficient, 1.1x SFace" though 5 of its 7 configurations
    were below SFace: the mean was lifted by two cheap ones."""
    import pandas as pd

    per_min = {"efficientnet_lite0": [10000.0, 9000.0, 2000.0, 2500.0, 3000.0], "sface": [4900.0]}
    configs = pd.DataFrame([{"backbone": b, "score_per_minute": v, "test/score": 800.0, "time/cost_s": 10.0}
                            for b, vs in per_min.items() for v in vs])
    t = tables.efficiency(configs).set_index("backbone")
    assert t.loc["efficientnet_lite0", "median"] == 3000.0 and t.loc["efficientnet_lite0", "score_per_minute"] == 5300.0
    text = tables.read_efficiency(t.reset_index())
    assert "median 3000.0" in text and "1.08× SFace (face model) (4900.0)" in text
    assert "its median configuration is below SFace (face model)'s mean (4900.0)" in text
    configs.loc[configs["backbone"] == "sface", "score_per_minute"] = 2900.0  # below Lite0's median: no caveat
    assert "median configuration" not in tables.read_efficiency(tables.efficiency(configs))


@pytest.fixture(scope="module")
def tied_dir(tmp_path_factory):
    """Every configuration with the same score (a collapsed sweep): the report must draw no conclusion."""
    root = tmp_path_factory.mktemp("tied")
    blob = npz_bytes(*make_images(root / "images"))
    rng = np.random.default_rng(3)
    for name in (*SCORES, "demo-no-augment"):
        cfg = resolve(name)
        m = metrics_for(500.0, 500.0, "efficientnet_lite0", cfg.epochs, rng) | FACTS
        write_run(root / "runs", name, cfg, m, blob)
    return root / "runs"


@pytest.mark.slow
def test_tied_runs_are_called_tied_and_draw_no_conclusion(tied_dir, tmp_path):
    """It said "ρ n/a (< 3 configurations) over 7 configurations", "LR 0.001 is best … +0.0%", "largest
    change: … (+0.0); smallest: …" and "validation would have picked the right model"."""
    report = build_report(store.load(tied_dir), tmp_path).read_text()
    readings = [line for line in report.splitlines() if line.startswith("**Reading:**")]
    text = "\n".join(readings)
    for wrong in ("is best for", "+0.0%", "Largest change", "smallest:", "would have picked", "< 3 configurations",
                  "has the highest test score", "peaks at", "separable"):
        assert wrong not in text, wrong
    assert "The runs are tied: every learning rate from 0.001 to 0.1 scores 500.0, so no learning rate is best" in text
    assert "scores 500.0 at every number of epochs (3, 5), so there is no peak" in text
    assert "The runs are tied: none of the 3 change(s) moves the test score" in text
    assert "The runs are tied: all 7 configurations shown have the same test score (500.0), so none is best" in text
    assert "closed-set: the runs are tied on validation and test (7 configurations with one score), so there is no " \
           "ranking to compare and no pick to judge" in text
    assert "from one of the 7 configurations tied for the best test score" in text
    audit = next(line for line in report.splitlines() if line.startswith("| closed-set |"))
    assert audit.split(" | ")[7] == "tied"


def test_an_untied_audit_with_a_constant_column_does_not_blame_the_count(configs):
    from benchmark.results.stats import protocol_audit

    t = protocol_audit(configs.assign(**{"val/score": 100.0}))  # 6 configurations, validation constant
    assert tables.read_audit(t).startswith("closed-set: the runs are tied on validation (6 configurations")
    t = protocol_audit(configs.head(2))
    assert "ρ n/a (< 3 configurations) over 2 configurations" in tables.read_audit(t)


def test_figure_titles_say_cost_not_training(configs):
    """Figure 4 said "Training efficiency" with configurations that train nothing; Figure 5 "training-time"
    while its axis is the cost."""
    (ax4,) = figures.figure4_efficiency(tables.efficiency(configs), configs).axes
    (ax5,) = figures.figure5_tradeoff(tables.pareto(configs)).axes
    assert ax4.get_title() == "Figure 4. Cost efficiency: test score per minute of cost"
    assert ax5.get_title() == "Figure 5. Test score vs cost trade-off" and "Cost" in ax5.get_xlabel()


def test_numbers_are_written_as_a_reader_writes_them():
    """"a gallery of 1422 holding 2.4e+02 same-identity item(s)"."""
    c = pd.DataFrame({"val/n_queries": [80.0], "val/n_gallery": [1422.0], "val/positives": [240.0],
                      "test/n_queries": [120.0], "test/n_gallery": [1422.0], "test/positives": [1.0]})
    assert tables.measured_on(c) == ("Measured on: validation 80 queries, each against a gallery of 1422 holding 240 "
                                     "same-identity items on average; test 120 queries, each against a gallery of "
                                     "1422 holding 1 same-identity item on average.")
    assert tables.split_difference(c).startswith("Validation and test are different retrieval tasks here: a "
                                                 "validation query has 240 same-identity items among 1422, a test "
                                                 "query 1 among 1422.")
    assert [tables.count(v) for v in (2.5, 0.25, 13.4, 2400.0, 3.0)] == ["2.5", "0.25", "13", "2400", "3"]
