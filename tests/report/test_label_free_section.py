"""The label-free validators section: per gallery style, each rule's Spearman ρ with the test score, its
pick, the pick's regret and test-people interval, held to a computation written out here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from benchmark.report import label_free
from benchmark.report.cross_domain import cross_domain_configs
from benchmark.results.schema import Unsupported

V = "validator/"
#: cartoon: configuration -> per seed (test score, val score, val snd, test snd, val entropy, test entropy,
#: val cycle, test cycle, test-people half-width); None = not computable
CARTOON = {
    "frozen": [(548.0, 500.0, 2.0, 1.5, 3.0, 2.9, 0.30, 0.20, 95.0)] * 2,
    "tta": [(545.0, 490.0, 1.8, 1.4, 2.5, 2.6, 0.35, 0.25, 75.0)] * 2,
    "report": [(512.0, 515.0, 1.4, 1.1, 2.2, 2.4, 0.32, None, 30.0),
               (532.0, 525.0, 1.6, 1.3, 2.2, 2.4, 0.32, None, 34.0)],
    "arcface": [(491.0, 510.0, 1.7, 1.0, 2.0, None, 0.25, 0.10, 40.0)] * 2,
}
#: stylization: only frozen has a cycle value (one value: no cycle row)
STYLIZATION = {
    "frozen": [(728.0, 700.0, 2.2, 1.9, 3.1, 3.0, 0.40, 0.30, 70.0)],
    "tta": [(779.0, 690.0, 2.1, 2.0, 3.0, 2.8, None, None, 71.0)],
}
FIELDS = ("test/score", "val/score", f"val/{V}snd", f"test/{V}snd", f"val/{V}entropy", f"test/{V}entropy",
          f"val/{V}cycle", f"test/{V}cycle", "test/score_sample_ci")
RECIPE = {"frozen": dict(embedding="backbone"), "tta": dict(embedding="backbone", centering=True, rerank="kreciprocal"),
          "report": dict(embedding="head"), "arcface": dict(embedding="head", loss="arcface")}
LABEL = {"frozen": "sface / frozen", "tta": "sface / frozen, centering, rerank=kreciprocal",
         "report": "sface / report", "arcface": "sface / loss=arcface"}


def _runs(validators: bool = True) -> pd.DataFrame:
    rows = []
    for style, configs in (("cartoon", CARTOON), ("stylization", STYLIZATION)):
        for name, seeds in configs.items():
            for seed, values in enumerate(seeds):
                row = dict(status="ok", protocol="open-set", backbone="sface", weights="model", seed=seed,
                           query_fraction=0.5, gallery_style=style, run_id=f"{name}-{style}-{seed}",
                           experiment=f"{name}-{style}", centering=False, rerank="none", loss="ce")
                row |= RECIPE[name] | {k: math.nan if v is None else v for k, v in zip(FIELDS, values)}
                rows.append(row)
    df = pd.DataFrame(rows)
    return df if validators else df.drop(columns=[c for c in df.columns if V in c])


def _means(configs: dict, column: str) -> dict[str, float]:
    """The seed mean of ``column`` per configuration, nulls left out (a configuration without any: absent)."""
    i = FIELDS.index(column)
    out = {}
    for name, seeds in configs.items():
        vals = [s[i] for s in seeds if s[i] is not None]
        if vals:
            out[name] = sum(vals) / len(vals)
    return out


def _spearman_written_out(x: list[float], y: list[float]) -> float:
    """1 - 6 Σd² / (n (n² - 1)) of the ranks (no ties in these data)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    n = len(x)
    return 1 - 6 * float(((rx - ry) ** 2).sum()) / (n * (n * n - 1))


def _expected(configs: dict, rule: str, higher: bool) -> dict:
    test, value = _means(configs, "test/score"), _means(configs, rule)
    names = sorted(value, key=lambda n: LABEL[n])
    signed = [value[n] if higher else -value[n] for n in names]
    pick = names[int(np.argmax(signed))]
    best = max(test, key=test.get)
    rho = _spearman_written_out(signed, [test[n] for n in names])
    assert rho == pytest.approx(spearmanr(signed, [test[n] for n in names]).statistic)
    return {"n": len(names), "rho": rho, "pick": LABEL[pick], "pick_test": test[pick], "best": LABEL[best],
            "regret": test[best] - test[pick],
            "pick_people_ci": _means(configs, "test/score_sample_ci")[pick]}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    c, _ = cross_domain_configs(_runs())
    return label_free.validator_table(c)


HIGHER = {"score": True, "snd": True, "entropy": False, "cycle": True}
RULES = ["val/score", *(f"{s}/{V}{n}" for n in ("snd", "entropy", "cycle") for s in ("val", "test"))]


@pytest.mark.parametrize("rule", RULES)
def test_rho_pick_and_regret_on_cartoon_equal_an_independent_computation(table, rule):
    row = table[(table["style"] == "cartoon") & (table["rule"] == rule)]
    assert len(row) == 1
    row = row.iloc[0]
    want = _expected(CARTOON, rule, HIGHER[rule.rsplit("/", 1)[1]])
    for k, v in want.items():
        assert row[k] == (pytest.approx(v) if isinstance(v, float) else v), (rule, k)
    assert row["within"] == (want["regret"] <= want["pick_people_ci"])


def test_every_recorded_validator_is_a_rule_on_both_splits_in_its_direction():
    from benchmark.evaluation.validators import RECORDED

    rules = {col: higher for col, _, _, higher in label_free.rules()}
    assert rules == {"val/score": True, **{f"{s}/{V}{n}": v.higher for n, v in RECORDED.items() for s in ("val", "test")}}
    assert rules[f"val/{V}entropy"] is False


def test_entropy_is_ranked_lower_is_better(table):
    """val/entropy's lowest value (arcface, 2.0) is its pick and ρ is that of −entropy: here negative,
    the most confident configuration testing worst (regret 57 > its people interval ±40)."""
    row = table[(table["style"] == "cartoon") & (table["rule"] == f"val/{V}entropy")].iloc[0]
    assert not row["higher"] and row["pick"] == LABEL["arcface"] and row["regret"] == pytest.approx(548 - 491)
    test, ent = _means(CARTOON, "test/score"), _means(CARTOON, f"val/{V}entropy")
    names = list(ent)
    assert row["rho"] == pytest.approx(-spearmanr([ent[n] for n in names], [test[n] for n in names]).statistic)
    assert row["rho"] < 0 and not row["within"]


def test_nulls_are_left_out_and_fewer_than_two_values_give_no_row(table):
    cartoon = table[table["style"] == "cartoon"].set_index("rule")
    assert cartoon.loc[f"test/{V}cycle", "n"] == 3 and cartoon.loc[f"test/{V}entropy", "n"] == 3
    assert cartoon.loc["val/score", "n"] == 4
    # arcface's test entropy is null, so it is not picked; regret still against the best of every configuration
    assert cartoon.loc[f"test/{V}entropy", "pick"] == LABEL["report"]
    assert cartoon.loc[f"test/{V}entropy", "regret"] == pytest.approx(548 - 522)
    stylization = set(table.loc[table["style"] == "stylization", "rule"])
    assert f"val/{V}cycle" not in stylization and f"test/{V}cycle" not in stylization
    assert {"val/score", f"val/{V}snd", f"test/{V}entropy"} <= stylization


def test_reading_names_the_validators_within_the_interval_of_the_best(table):
    text = label_free.reading(table)
    cartoon, stylization = text.split("; on **stylization**")
    assert cartoon.startswith("on **cartoon** (4 configurations, best by test sface / frozen 548.0)")
    assert f"`val/{V}snd` (regret 0.0)" in cartoon and f"`test/{V}cycle` (regret 3.0 ≤ ±75.0)" in cartoon
    assert f"`val/{V}entropy` costs most (57.0 points, picks {LABEL['arcface']})" in cartoon
    assert "`val/score` regret 26.0 (within it)" in cartoon


def test_a_pick_without_a_test_people_interval_is_not_judged():
    c, _ = cross_domain_configs(_runs().drop(columns=["test/score_sample_ci"]))
    t = label_free.validator_table(c)
    row = t[(t["style"] == "cartoon") & (t["rule"] == f"val/{V}entropy")].iloc[0]
    assert row["regret"] == pytest.approx(57) and row["within"] is None and math.isnan(row["pick_people_ci"])
    assert t.loc[t["regret"] == 0, "within"].eq(True).all()  # the best itself needs no interval
    assert "| 57.0 | – |" in label_free.style_markdown(t[t["style"] == "cartoon"])
    assert "rule(s) without a test-people interval" in label_free.reading(t)


def test_people_interval_is_the_bootstrap_of_the_picks_saved_per_query_scores(tmp_path):
    from benchmark.evaluation.metrics import sample_interval

    rng = np.random.default_rng(0)
    labels, sides = np.repeat(np.arange(20), 4), np.tile(["query", "gallery"], 40)
    rows = []
    for name, p, snd in (("frozen", 0.3, 1.0), ("tta", 0.5, 2.0)):
        d = tmp_path / name
        d.mkdir()
        saved = np.where(sides == "query", np.where(rng.random(80) < p, 1000.0, 0.0), np.nan)
        np.savez(d / "embeddings.npz", embeddings=np.zeros((80, 2)), labels=labels, sides=sides, query_scores=saved)
        (d / "config.yaml").write_text("backbone: sface\n")
        rows.append(dict(status="ok", protocol="open-set", backbone="sface", weights="model", seed=0,
                         query_fraction=0.5, gallery_style="cartoon", run_id=name, experiment=name, run_dir=str(d),
                         centering=name == "tta", embedding="backbone", **{"test/score": float(np.nanmean(saved)), f"val/{V}snd": snd}))
    c, _ = cross_domain_configs(pd.DataFrame(rows))
    row = label_free.validator_table(c).iloc[0]
    scores = np.load(tmp_path / "tta" / "embeddings.npz")["query_scores"]
    q = sides == "query"
    assert row["pick"] == "sface / frozen, centering" and row["pick_people_ci"] == pytest.approx(
        sample_interval(scores[q], labels[q]))


class _Writer:
    def __init__(self):
        self.lines, self.tables, self.figures = [], {}, {}

    def reading(self, text):
        self.lines.append(f"**Reading:** {text}")

    def table(self, name, df, md, metrics=True):
        self.tables[name] = df

    def figure(self, name, fig, caption):
        self.figures[name] = fig


def test_the_section_writes_a_table_per_style_and_the_regret_figure_from_it():
    w = _Writer()
    label_free.section(w, _runs())
    assert set(w.tables) == {"label_free_validators_cartoon", "label_free_validators_stylization"}
    fig = w.figures["label_free_validators"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["cartoon gallery (4 configurations)",
                                                 "stylization gallery (2 configurations)"]
    cartoon = w.tables["label_free_validators_cartoon"].set_index("rule")
    rules = [t.get_text() for t in panels[0].get_yticklabels()]
    assert [round(p.get_width(), 6) for p in panels[0].patches] == [round(cartoon.loc[r, "regret"], 6) for r in rules]


def test_the_section_is_skipped_without_validator_columns():
    with pytest.raises(Unsupported, match="no query -> gallery record has a label-free validator"):
        label_free.section(_Writer(), _runs(validators=False))
    nulls = _runs().assign(**{c: math.nan for c in _runs().columns if V in c})
    with pytest.raises(Unsupported, match="label-free validator"):
        label_free.section(_Writer(), nulls)


def test_the_section_is_registered_after_the_cross_domain_one_for_query_gallery_runs_only():
    from benchmark.report.build import SECTIONS, Inputs

    titles = [s.title for s in SECTIONS]
    i = titles.index("Label-free validators: would they have picked well?")
    assert titles[i - 1] == "What should have been submitted? Under the domain gap"
    applies = SECTIONS[i].applies
    assert applies(Inputs(_runs(), None, None))
    assert not applies(Inputs(_runs().assign(gallery_style="none").drop(columns=["query_fraction"]), None, None))
