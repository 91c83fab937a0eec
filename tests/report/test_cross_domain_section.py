"""The cross-domain report section: gap and gap closed per remedy and style, from run rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.report import cross_domain


def _runs() -> pd.DataFrame:
    """SFace: photo gallery 990/1000, cartoon frozen 100/120, k-reciprocal on cartoon 500/540."""
    rows = []
    for seed, (photo, cartoon, tta) in enumerate([(990, 100, 500), (1000, 120, 540)]):
        common = dict(status="ok", protocol="open-set", backbone="sface", weights="model", seed=seed,
                      query_fraction=0.5, embedding="backbone")
        rows += [dict(common, run_id=f"photo-{seed}", experiment="photo", gallery_style="none",
                      **{"test/score": photo, "val/score": photo}),
                 dict(common, run_id=f"cartoon-{seed}", experiment="cartoon", gallery_style="cartoon",
                      **{"test/score": cartoon, "val/score": cartoon}),
                 dict(common, run_id=f"tta-{seed}", experiment="tta", gallery_style="cartoon", centering=True,
                      rerank="kreciprocal", **{"test/score": tta, "val/score": tta})]
    same_domain = dict(status="ok", protocol="open-set", backbone="sface", weights="model", seed=0, run_id="loo",
                       experiment="loo", embedding="backbone", gallery_style="none", **{"test/score": 997.0})
    return pd.DataFrame(rows + [same_domain])


def test_gap_and_gap_closed_per_remedy_and_style():
    c, runs = cross_domain.cross_domain_configs(_runs())
    assert set(runs["run_id"]) == {f"{k}-{s}" for k in ("photo", "cartoon", "tta") for s in (0, 1)}  # not loo
    t = cross_domain.gap_table(c).set_index(["gallery", "remedy"])
    assert t.loc[("cartoon", "frozen"), "gap"] == pytest.approx(995 - 110)
    assert t.loc[("cartoon", "frozen, centering, rerank=kreciprocal"), "gap_closed"] == pytest.approx((520 - 110) / 885)
    assert math.isnan(t.loc[(cross_domain.PHOTO, "frozen"), "gap_closed"])
    head, rows = cross_domain.side_by_side(cross_domain.gap_table(c))
    assert head[2].startswith(cross_domain.PHOTO) and any("closes +46% of the gap" in cell for r in rows for cell in r)
    assert rows[0][2].endswith("(n=2)")  # no cost recorded: none shown (not "nan s")


def test_the_section_is_only_in_reports_with_query_gallery_runs():
    runs = _runs()
    assert cross_domain.present(runs)
    assert not cross_domain.present(runs[runs["run_id"] == "loo"].drop(columns=["query_fraction"]))


def test_reading_and_choice_set_each_pick_beside_frozen():
    """choose picks by validation alone (here the higher-val tta rows); the line shows the frozen score
    on the same gallery beside the pick's test score, and the reading counts remedies below frozen."""
    runs = _runs()
    worse = runs[runs["experiment"] == "cartoon"].assign(experiment="report", embedding="head",
                                                         run_id=lambda d: "report-" + d["seed"].astype(str),
                                                         **{"test/score": 90.0, "val/score": 80.0})
    runs = pd.concat([runs, worse], ignore_index=True).fillna({"centering": False, "rerank": "none"})
    c, runs = cross_domain.cross_domain_configs(runs)
    t = cross_domain.gap_table(c)
    lines = cross_domain.choices(runs, t)
    cartoon = next(line for line in lines if "gallery **cartoon**" in line)
    assert "picks **tta**" in cartoon and cartoon.endswith("read only afterwards: 520.0 (frozen sface: 110.0)"), cartoon
    assert "1 of its 2 remedies on cartoon have a lower mean score than frozen" in cross_domain.reading(t)


def test_gap_figure_draws_each_remedy_between_frozen_and_photo():
    c, _ = cross_domain.cross_domain_configs(_runs())
    t = cross_domain.gap_table(c)
    fig = cross_domain.gap_figure(t)
    (ax,) = fig.axes  # one backbone x one rendered style
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert widths == [110.0, 520.0]  # frozen cartoon, k-reciprocal cartoon (means over seeds)
    assert sorted(round(float(line.get_xdata()[0]), 6) for line in ax.lines if line.get_linestyle() in (":", "--")) \
        == [110.0, 995.0]  # frozen on cartoon, frozen on photos
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["frozen", "frozen+center+rerank:kreciprocal"]


def test_two_configurations_of_one_recipe_on_one_style_are_two_rows_and_two_bars():
    """A second frozen cartoon configuration (another image size) crashed the figure: "cannot reindex
    on an axis with duplicate labels"."""
    runs = _runs()
    other = runs[runs["experiment"] == "cartoon"].assign(experiment="cartoon-160", image_size=160,
                                                         run_id=lambda d: d["run_id"] + "-160")
    other["test/score"] = [200.0, 220.0]
    c, _ = cross_domain.cross_domain_configs(pd.concat([runs, other], ignore_index=True))
    cartoon = c[c["style"] == "cartoon"].set_index("remedy")["test/score"]
    assert cartoon["frozen"] == 110.0  # the first keeps the recipe's name: the gap reads it
    assert [r for r in cartoon.index if r.startswith("frozen (")] == ["frozen (cartoon-160)"]
    assert cartoon["frozen (cartoon-160)"] == 210.0
    (ax,) = cross_domain.gap_figure(cross_domain.gap_table(c)).axes
    assert sorted(round(p.get_width(), 6) for p in ax.patches) == [110.0, 210.0, 520.0]


def test_side_by_side_gives_each_gallery_its_own_cost():
    runs = _runs().assign(**{"time/cost_s": lambda d: d["gallery_style"].map({"none": 10.0, "cartoon": 40.0}),
                             "test/score_sample_ci": lambda d: d["gallery_style"].map({"none": 2.0, "cartoon": 30.0})})
    c, _ = cross_domain.cross_domain_configs(runs)
    head, rows = cross_domain.side_by_side(cross_domain.gap_table(c))
    frozen = next(r for r in rows if r[1] == "frozen")
    assert head[2:] == [f"{cross_domain.PHOTO} score (cost per run)", "cartoon score (cost per run)"]
    assert frozen[2].endswith("(n=2; test people ±2, 10 s)") and frozen[3].endswith("(n=2; test people ±30, 40 s)")


def test_paired_gain_over_frozen_is_the_people_bootstrap_of_per_query_differences(tmp_path):
    """From the runs' saved per-query scores: gain = mean over queries of (remedy - frozen), its
    interval the people-bootstrap of those differences (seeds averaged first)."""
    import numpy as np

    from benchmark.evaluation.metrics import sample_interval

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(30), 4)
    sides = np.tile(["query", "gallery"], 60)
    frozen = np.where(rng.random(120) < 0.3, 1000.0, 0.0)
    remedy = [np.where(rng.random(120) < p, 1000.0, 0.0) for p in (0.4, 0.5)]
    rows = []
    for name, scores, seed in [("cartoon", frozen, 0), ("tta", remedy[0], 0), ("tta", remedy[1], 1)]:
        d = tmp_path / f"{name}-{seed}"
        d.mkdir()
        saved = np.where(sides == "query", scores, np.nan)
        np.savez(d / "embeddings.npz", embeddings=np.zeros((120, 2)), labels=labels, sides=sides, query_scores=saved)
        (d / "config.yaml").write_text("backbone: sface\n")
        rows.append(dict(status="ok", protocol="open-set", backbone="sface", weights="model", seed=seed,
                         query_fraction=0.5, embedding="backbone", gallery_style="cartoon", run_id=f"{name}-{seed}",
                         experiment=name, run_dir=str(d), centering=name == "tta",
                         **{"test/score": float(np.nanmean(saved)), "val/score": 1.0}))
    c, _ = cross_domain.cross_domain_configs(pd.DataFrame(rows))
    t = cross_domain.paired_gains(c, cross_domain.gap_table(c)).set_index("remedy")
    q = sides == "query"
    diff = (remedy[0][q] + remedy[1][q]) / 2 - frozen[q]
    assert t.loc["frozen, centering", "gain"] == pytest.approx(diff.mean())
    assert t.loc["frozen, centering", "gain_people_ci"] == pytest.approx(sample_interval(diff, labels[q]))
    assert math.isnan(t.loc["frozen", "gain"])
