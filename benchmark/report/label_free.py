"""The report section "Label-free validators: would they have picked well?" (issue 26): for each gallery
style of the cross-domain section (``cross_domain.cross_domain_configs``: its seed-mean configurations,
grouped by style), how well each label-free validator would have chosen among them.

A *rule* is a column ``benchmark choose --by`` can rank by: ``val/score`` (the held-out validation score,
today's rule), each validator a record can hold (``benchmark.evaluation.validators.RECORDED``) on the
validation split (``val/validator/NAME``: what ``choose --by NAME`` uses, no test data) and on the test
split's own queries and gallery (``test/validator/NAME``: transductive, no test label read). On a style,
a rule ranks the configurations that have a value for it (null: left out; fewer than 2: no row):

- ρ: Spearman's rank correlation (``scipy.stats.spearmanr``) between the rule's value, sign-flipped when
  lower is better (``Validator.higher``: ``entropy``), and the mean test score; > 0: it agrees with test.
- pick: the configuration with the best value in the rule's direction (ties: the first in label order,
  the table says how many it ties with); its mean test score.
- best: the highest mean test score of *every* configuration on that style (one a rule cannot compute
  could not have been picked by it); regret = best − pick's test score (points, >= 0).
- the pick's test-people interval: the 95% half-width of its score when the test people are drawn
  again (``metrics.sample_interval`` on its per-query scores, seed-mean, as the cross-domain section;
  without saved per-query scores, the record's ``test/score_sample_ci``); *within*: regret <= it.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd

from benchmark.report import tables
from benchmark.report.cross_domain import PHOTO, _config_query_scores, cross_domain_configs
from benchmark.results.schema import Unsupported, missing

SCORE = "val/score"
COLUMNS = ["style", "n_configs", "rule", "validator", "split", "higher", "n", "rho", "pick", "pick_tied", "pick_test",
           "pick_people_ci", "best", "best_test", "regret", "within"]


def rules() -> list[tuple[str, str, str, bool]]:
    """(column, validator name, split, higher is better) of every rule, in table order: ``val/score``,
    then each validator a record can hold (``validators.RECORDED``: ``VALIDATORS`` and the ensembles'
    ``MEMBER_VALIDATORS``) on validation and on test."""
    from benchmark.evaluation.validators import PREFIX, RECORDED

    out = [(SCORE, "score", "val", True)]
    for name, v in RECORDED.items():
        out += [(f"{split}/{PREFIX}{name}", name, split, v.higher) for split in ("val", "test")]
    return out


def has_validators(c: pd.DataFrame) -> bool:
    """Whether any configuration holds a validator value (records written before issue 26 have none)."""
    cols = [col for col, name, _, _ in rules() if name != "score" and col in c.columns]
    return bool(cols) and bool(c[cols].apply(pd.to_numeric, errors="coerce").notna().any().any())


def spearman(a, b) -> float:
    """Spearman ρ of two equal-length sequences (NaN when either is constant)."""
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, said as "–"
        return float(spearmanr(np.asarray(a, dtype=float), np.asarray(b, dtype=float)).statistic)


def people_interval(row) -> float:
    """The 95% half-width of a configuration's test score over a bootstrap of the test people, from its
    runs' saved per-query scores (seed mean, ``cross_domain._config_query_scores``), else the recorded
    ``test/score_sample_ci`` (seed mean); NaN without either."""
    from benchmark.evaluation.metrics import sample_interval

    got = _config_query_scores(row)
    if got is not None:
        return sample_interval(*got)
    v = row.get("test/score_sample_ci", math.nan)
    return math.nan if missing(v) else float(v)


def _labels(g: pd.DataFrame) -> pd.Series:
    """``backbone / remedy`` of each configuration, with its config id where two would share one."""
    label = g["backbone_label"].astype(str) + " / " + g["remedy"].astype(str)
    twice = label.duplicated(keep=False)
    return label.where(~twice, label + " [" + g["config"].astype(str) + "]")


def _styles(c: pd.DataFrame) -> list[str]:
    return sorted(set(c["style"]), key=lambda s: (s != PHOTO, s))


def validator_table(c: pd.DataFrame, interval=people_interval) -> pd.DataFrame:
    """One row per gallery style x rule of the configurations ``c`` (``cross_domain_configs``), see the
    module doc; ``interval(row)``: a configuration's test-people half-width (computed for picks only)."""
    rows, cache = [], {}

    def ci(i) -> float:
        if i not in cache:
            cache[i] = interval(c.loc[i])
        return cache[i]

    for style in _styles(c):
        g = c[c["style"] == style].assign(_label=lambda d: _labels(d))
        g = g.assign(_test=pd.to_numeric(g["test/score"], errors="coerce")).dropna(subset=["_test"])
        g = g.sort_values("_label", kind="stable")
        if g.empty:
            continue
        best = g["_test"].idxmax()
        for col, name, split, higher in rules():
            if col not in g.columns:
                continue
            value = pd.to_numeric(g[col], errors="coerce").dropna() * (1 if higher else -1)
            if len(value) < 2:
                continue
            pick = value.idxmax()  # the first of equal values, in label order
            regret = float(g.at[best, "_test"] - g.at[pick, "_test"])
            half = ci(pick)
            within = True if regret == 0 else (None if missing(half) else bool(regret <= half))
            rows.append({"style": style, "n_configs": len(g), "rule": col, "validator": name, "split": split,
                         "higher": higher, "n": len(value), "rho": spearman(value, g.loc[value.index, "_test"]),
                         "pick": g.at[pick, "_label"], "pick_tied": int((value == value[pick]).sum() - 1),
                         "pick_test": float(g.at[pick, "_test"]), "pick_people_ci": half,
                         "best": g.at[best, "_label"], "best_test": float(g.at[best, "_test"]),
                         "regret": regret, "within": within})
    return pd.DataFrame(rows, columns=COLUMNS)


def _reads(r) -> str:
    if r["validator"] == "score":
        return "validation, labelled"
    return "validation, no label" if r["split"] == "val" else "test queries + gallery, no label (transductive)"


def _within(v) -> str:
    return "–" if v is None or missing(v) else "yes" if v else "no"


def style_markdown(t: pd.DataFrame) -> str:
    """One style's rows as Markdown."""
    head = ["rule (`choose --by`)", "reads", "better", "n", "Spearman ρ vs test", "pick", "pick's test score",
            "best by test", "regret", "within the pick's test-people interval"]
    rows = []
    for _, r in t.iterrows():
        tied = f" (tied with {r['pick_tied']})" if r["pick_tied"] else ""
        people = "" if missing(r["pick_people_ci"]) else f" (people ±{r['pick_people_ci']:.1f})"
        rows.append([f"`{r['rule']}`", _reads(r), "higher" if r["higher"] else "lower", str(r["n"]),
                     tables.cell(r["rho"], digits=2), r["pick"] + tied, f"{r['pick_test']:.1f}{people}",
                     f"{r['best']} ({r['best_test']:.1f})", f"{r['regret']:.1f}", _within(r["within"])])
    return tables.markdown(head, rows)


def reading(t: pd.DataFrame) -> str:
    """Per style: the validators whose pick is within its test-people interval of the best, and
    ``val/score``'s regret beside them."""
    parts = []
    for style in _styles(t):
        s = t[t["style"] == style]
        v = s[s["validator"] != "score"]
        head = f"on **{style}** ({s['n_configs'].iloc[0]} configurations, best by test {s['best'].iloc[0]} " \
               f"{s['best_test'].iloc[0]:.1f})"
        good = [f"`{r['rule']}` (regret {r['regret']:.1f}" + ("" if r["regret"] == 0 else
                f" ≤ ±{r['pick_people_ci']:.1f}") + ")" for _, r in v[v["within"].eq(True)].iterrows()]
        bad = v[v["within"].eq(False)]
        text = head + (": " + ", ".join(good) + " pick within the test people's interval of the best" if good else
                       ": no validator picks within the test people's interval of the best" if len(v) else
                       ": no validator has 2 values")
        if len(bad):
            worst = bad.loc[bad["regret"].idxmax()]
            text += f"; `{worst['rule']}` costs most ({worst['regret']:.1f} points, picks {worst['pick']})"
        unknown = int(v["within"].isna().sum())
        if unknown:
            text += f"; {unknown} rule(s) without a test-people interval"
        score = s[s["validator"] == "score"]
        if len(score):
            r = score.iloc[0]
            text += f"; `val/score` regret {r['regret']:.1f}" + ("" if missing(r["within"]) else
                                                                 f" ({'within' if r['within'] else 'beyond'} it)")
        parts.append(text)
    return "; ".join(parts) + "." if parts else "No gallery style has 2 configurations with a validator."


def figure(t: pd.DataFrame):
    """One panel per gallery style: each rule's regret (points; a dot marks it, so that 0 shows), blue
    within the pick's test-people interval (its half-width marked |), red beyond it, grey without one;
    ρ beside each; ``val/score``, today's rule, above a line."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from benchmark.report.figures import _style as figure_style

    if t.empty:
        raise Unsupported("no gallery style has 2 configurations with a validator")
    styles = _styles(t)
    order = [col for col, *_ in rules() if col in set(t["rule"])]
    ncols = min(3, len(styles))
    nrows = math.ceil(len(styles) / ncols)
    top = float(np.nanmax(np.r_[t["regret"].to_numpy(float), t["pick_people_ci"].to_numpy(float), 1.0]))
    with figure_style():
        fig = Figure(figsize=(2.4 + 3.8 * ncols, 1.3 + nrows * (0.5 + 0.36 * len(order))), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel())
    colour = {True: "#2a7ab9", False: "#c0504d", None: "#9a9a9a"}
    y = len(order) - 1 - np.arange(len(order))  # the table's order, top down (a shared axis: no per-panel invert)
    for ax, style in zip(axes, styles):
        s = t[t["style"] == style].set_index("rule").reindex(order)
        within = [None if missing(v) else bool(v) for v in s["within"]]
        colours = [colour[v] for v in within]
        ax.barh(y, s["regret"].fillna(0), color=colours, height=0.6)
        ax.scatter(s["regret"], y, color=colours, s=18, zorder=3)
        ax.plot(s["pick_people_ci"], y, linestyle="none", marker="|", markersize=13, markeredgewidth=2, color="black")
        for yi, (_, r) in zip(y, s.iterrows()):
            if missing(r["regret"]):
                ax.text(top * 0.02, yi, "no row (under 2 values)", va="center", fontsize=7, color="#666666")
            else:
                right = max(r["regret"], 0 if missing(r["pick_people_ci"]) else r["pick_people_ci"])
                ax.text(right + top * 0.04, yi, f"{r['regret']:.0f}   ρ = {tables.cell(r['rho'], digits=2)}",
                        va="center", fontsize=7)
        if order[0] == SCORE:
            ax.axhline(y[0] - 0.5, color="#555555", linewidth=0.8)
        ax.set_yticks(y, order, fontsize=7)
        ax.set_xlim(-top * 0.015, top * 1.45)  # a dot at 0 shows whole
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{style} gallery ({int(s['n_configs'].max())} configurations)", fontsize=9)
        ax.set_xlabel("regret = best test score − pick's (points)", fontsize=8)
    for ax in axes[len(styles):]:
        ax.set_visible(False)
    present = {None if missing(v) else bool(v) for v in t["within"]}
    names = {True: "within the pick's test-people interval", False: "beyond it", None: "no interval"}
    fig.legend(handles=[Patch(color=colour[k], label=names[k]) for k in (True, False, None) if k in present]
               + [Line2D([], [], color="black", marker="|", linestyle="none", markersize=10, markeredgewidth=2,
                         label="pick's test-people half-width")],
               loc="outside lower center", ncols=4, fontsize=7)
    fig.suptitle("Label-free validators: what picking by each rule would have cost, per gallery style\n"
                 "(ρ: Spearman of the rule, in its direction, with the test score)", fontsize=10)
    return fig


def _slug(style: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", style.lower()).strip("_")


def section(w, df: pd.DataFrame, confidence: float = 0.95) -> None:
    """Write the section into the report writer ``w`` (``build._Writer``); Unsupported without validators."""
    c, _ = cross_domain_configs(df, confidence)
    if not has_validators(c):
        raise Unsupported("no query -> gallery record has a label-free validator (`<split>/validator/<name>`: "
                          "records written before issue 26, or every value null)")
    t = validator_table(c)
    if t.empty:
        counts = c.assign(_n=pd.to_numeric(c["test/score"], errors="coerce").notna()).groupby("style")["_n"].sum()
        raise Unsupported("no gallery style has 2 configurations with both a validator and a test score ("
                          + ", ".join(f"{s}: {int(counts[s])}" for s in _styles(c)) + ")")
    w.reading(reading(t))
    w.figure("label_free_validators", figure(t), "Regret of the configuration each rule would pick, per gallery style")
    for style in _styles(t):
        s = t[t["style"] == style]
        w.lines += ["", f"**{style} gallery** ({int(s['n_configs'].iloc[0])} configurations):"]
        w.table(f"label_free_validators_{_slug(style)}", s, style_markdown(s), metrics=False)
        vals = c.loc[c["style"] == style, "val_gallery_style"] if "val_gallery_style" in c else pd.Series(dtype=object)
        galleries = {"same as test" if missing(v) or str(v) in ("none", "nan") else str(v) for v in vals}
        if len(galleries) > 1:
            w.lines += ["", "<sub>These configurations were validated on different galleries "
                            f"({', '.join(sorted(galleries))}): their `val/` numbers are not strictly comparable.</sub>"]
    w.lines += ["", "Per gallery style, each rule ranks the configurations it has a value for (the seed-mean rows of "
                    "the section above): `val/score` is today's validation score; `val/validator/NAME` is what "
                    "`benchmark choose --by NAME` uses, without test data; `test/validator/NAME` reads the test "
                    "split's own queries and gallery without a label (transductive, what a competitor can compute on "
                    "the unlabeled competition test set). ρ: Spearman's rank correlation of the rule, sign-flipped "
                    "where lower is better, with the mean test score (> 0: it agrees). *Best by test*: the best of "
                    "every configuration on that style; regret = best − pick (points). *Test-people interval*: the "
                    "95% half-width of the pick's score when the test people are drawn again (bootstrap over "
                    "identities of its per-query scores, else the recorded `score_sample_ci`); a regret within it "
                    "is not a finding."]
