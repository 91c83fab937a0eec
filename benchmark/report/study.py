"""The report section "What should have been submitted?": backbones x training recipes on the
competition's real situation (open-set: unseen identities), from any results folder holding such runs.

A configuration's *backbone* is its ``backbone`` (marked when its weights are random: plumbing rows,
not candidates) and its *recipe* the training keys that differ from the report's recipe
(``frozen`` = normalized backbone features without training, ``report`` = none differ). The table
gives mean ± 95% CI of the open-set test score and MAP@R and the cost per run, deltas against the
report's recipe on the same backbone with separability marked; the figure plots score against cost,
one colour per backbone, with the Pareto front; the choice is ``benchmark choose``'s, on validation only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.evaluation.remedies import CONFIG_KEYS as TEST_TIME_KEYS
from benchmark.report import tables
from benchmark.results.schema import DEFAULTS, Unsupported, missing, norm
from benchmark.report.results import prepare
from benchmark.results.stats import diff_ci

#: the keys that make a training recipe (those of the config that exist in the results)
RECIPE_KEYS = ("loss", "loss_args", "miner", "miner_args", "samples_per_class", "optimizer", "weight_decay", "scheduler",
               "warmup_epochs", "augment", "trainable_blocks", "backbone_lr", "bn_train", "lr", "epochs",
               "batch_size", "normalize", "dropout", "embedding_dim", "patience")
#: cross-domain remedies (issue 17), named after the recipe when they differ from the default: training
#: styles, rendered queries, test-time BatchNorm statistics and the test-time remedy registry's keys
REMEDY_KEYS = ("train_styles", "query_style", "adabn", *TEST_TIME_KEYS)
#: MAP@R column names, newest first (records written before it existed simply lack it)
MAPR_COLUMNS = ("test/map_at_r", "test/mapr", "test/map@r")
#: the old boolean spelling of ``augment`` reads as the named policy
_AUGMENT_ALIASES = {"true": "report", "false": "none"}


def _same(key: str, value) -> bool:
    default = DEFAULTS.get(key)
    if missing(value) or missing(default):
        return missing(value) and missing(default)
    a, b = str(norm(value)).lower(), str(norm(default)).lower()
    if key == "augment":
        a, b = _AUGMENT_ALIASES.get(a, a), _AUGMENT_ALIASES.get(b, b)
    try:
        return math.isclose(float(a), float(b))
    except ValueError:
        return a == b


def _unset(v) -> bool:
    """A remedy key left at its default (none, false, empty), in a table cell or a config value."""
    if isinstance(v, (list, tuple, dict, str)):
        return not v or v in ("none", "()", "[]", "{}", "False")
    return v is False or v is None or missing(v)


def _listed(v) -> str:
    """A remedy value in a label: a list (``train_styles``, also as its table cell) as ``a/b/c``."""
    if isinstance(v, str) and v.startswith(("(", "[")):
        import ast

        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v
    return "/".join(map(str, v)) if isinstance(v, (list, tuple)) else str(norm(v))


def recipe(row) -> str:
    """``frozen``, ``report`` or the differing recipe keys (``loss=arcface, miner=batch_hard``), then
    the cross-domain remedies that are set (``centering, rerank=kreciprocal``): two configurations
    that differ only in a test-time remedy never share a label."""
    if str(row.get("embedding", "head")) == "backbone":
        parts = ["frozen"]
    else:
        parts = [f"{k}={norm(row[k])}" for k in RECIPE_KEYS if k in row.index and not _same(k, row[k])] or ["report"]
    for key in REMEDY_KEYS:
        v = row.get(key)
        if not _unset(v):
            parts.append(key if v is True or v == "True" else f"{key}={_listed(v)}")
    return ", ".join(parts)


def backbone_label(row) -> str:
    weights = str(row.get("weights", "imagenet"))
    name = str(row["backbone"])
    if weights == "random":
        return f"{name} {PLUMBING}"
    return name if weights in ("imagenet", "model", "nan", "None") else f"{name} ({weights})"


def _mapr_column(configs: pd.DataFrame) -> str | None:
    return next((c for c in MAPR_COLUMNS if c in configs.columns and configs[c].notna().any()), None)


def mapr_from_embeddings(run_dir) -> float:
    """MAP@R of a run's saved test embeddings (pytorch-metric-learning's AccuracyCalculator, every
    item querying the others), for records written before runs recorded MAP@R themselves."""
    from pathlib import Path

    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    if missing(run_dir) or not (Path(run_dir) / "embeddings.npz").exists():
        return math.nan
    path = Path(run_dir) / "embeddings.npz"
    with np.load(path) as z:
        emb, labels = torch.from_numpy(z["embeddings"]), torch.from_numpy(z["labels"])
    calc = AccuracyCalculator(include=("mean_average_precision_at_r",), k="max_bin_count", device=torch.device("cpu"))
    return float(calc.get_accuracy(emb, labels, ref_includes_query=True)["mean_average_precision_at_r"])


def _with_mapr(df: pd.DataFrame) -> pd.DataFrame:
    """``test/map_at_r`` filled from ``embeddings.npz`` where a successful open-set run lacks it."""
    if "run_dir" not in df.columns:
        return df
    col = MAPR_COLUMNS[0]
    have = pd.to_numeric(df[col], errors="coerce") if col in df.columns else pd.Series(math.nan, index=df.index)
    todo = have.isna() & df.get("status", pd.Series("ok", index=df.index)).eq("ok") \
        & df.get("protocol", pd.Series("", index=df.index)).astype(str).eq("open-set")
    if not todo.any():
        return df
    return df.assign(**{col: have.where(~todo, df["run_dir"].where(todo).map(mapr_from_embeddings))})


def study_configs(df: pd.DataFrame, confidence: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(open-set configurations of the main data setting with ``backbone_label``/``recipe``, their runs)."""
    df = _with_mapr(df)
    data = prepare(df, "open-set", confidence)
    c = data.configs
    if c.empty or str(data.setting.get("protocol")) != "open-set":
        raise Unsupported("no successful open-set runs (the study is run with experiments/sweeps/study.yaml)")
    c = c.assign(backbone_label=c.apply(backbone_label, axis=1), recipe=c.apply(recipe, axis=1))
    ids = {r for ids in c["run_ids"] for r in ids}
    runs = df[df["run_id"].astype(str).isin(ids)] if "run_id" in df.columns else df.iloc[:0]
    return c.reset_index(drop=True), runs


def study_table(c: pd.DataFrame) -> pd.DataFrame:
    """Backbone x recipe: score, MAP@R, cost, delta vs the report's recipe on the same backbone."""
    mapr = _mapr_column(c)
    rows = []
    for _, r in c.iterrows():
        ref = c[(c["backbone_label"] == r["backbone_label"]) & (c["recipe"] == "report")]
        d = hw = math.nan
        verdict = "reference" if r["recipe"] == "report" else "no report-recipe run"
        if r["recipe"] != "report" and len(ref):
            ref = ref.iloc[0]
            d, hw = diff_ci(r["test/score_values"], ref["test/score_values"])
            lo, hi = r["test/score"] - r["test/score_ci"], r["test/score"] + r["test/score_ci"]
            rlo, rhi = ref["test/score"] - ref["test/score_ci"], ref["test/score"] + ref["test/score_ci"]
            if missing(r["test/score_ci"]) or missing(ref["test/score_ci"]):
                verdict = "not judged (1 seed)"
            else:
                verdict = "separable" if (lo > rhi or hi < rlo) else "not separable"
        rows.append({
            "backbone": r["backbone_label"], "recipe": r["recipe"], "n": int(r["n"]),
            "test_score": r["test/score"], "test_score_ci": r["test/score_ci"],
            "test_mapr": r[mapr] if mapr else math.nan, "test_mapr_ci": r.get(f"{mapr}_ci", math.nan) if mapr else math.nan,
            "val_score": r.get("val/score", math.nan), "cost_s": r.get("time/cost_s", math.nan),
            "delta_vs_report": d, "delta_ci": hw, "vs_report": verdict, "config": r["config"],
        })
    t = pd.DataFrame(rows)
    return t.sort_values(["backbone", "test_score"], ascending=[True, False], kind="stable").reset_index(drop=True)


PLUMBING = "(random init: plumbing)"


def pareto_front(t: pd.DataFrame) -> pd.DataFrame:
    """Candidate configurations (plumbing rows excluded) no other beats on both score (higher) and
    cost (lower), by cost."""
    t = t[~t["backbone"].str.contains(PLUMBING, regex=False)]
    t = t.dropna(subset=["test_score", "cost_s"]).sort_values(["cost_s", "test_score"], ascending=[True, False])
    best, keep = -np.inf, []
    for i, r in t.iterrows():
        if r["test_score"] > best:
            keep.append(i)
            best = r["test_score"]
    return t.loc[keep]


def study_markdown(t: pd.DataFrame) -> str:
    has_mapr = t["test_mapr"].notna().any()
    rows = []
    for _, r in t.iterrows():
        delta = "—" if missing(r["delta_vs_report"]) else (
            f"{r['delta_vs_report']:+.1f}" + ("" if missing(r["delta_ci"]) else f" ± {r['delta_ci']:.1f}"))
        rows.append([r["backbone"], r["recipe"], str(r["n"]), tables.cell(r["test_score"], r["test_score_ci"], 1)]
                    + ([tables.cell(r["test_mapr"], r["test_mapr_ci"], 3)] if has_mapr else [])
                    + [f"{r['cost_s']:.0f}", delta, r["vs_report"]])
    head = (["backbone", "recipe", "n", "open-set test score"] + (["test MAP@R"] if has_mapr else [])
            + ["cost per run (s)", "Δ score vs report recipe", "vs report recipe"])
    return tables.markdown(head, rows)


def read_study(t: pd.DataFrame, front: pd.DataFrame) -> str:
    best = t.loc[t["test_score"].idxmax()]
    parts = [f"On unseen identities the best configuration by test score is {best['backbone']} / {best['recipe']} "
             f"({best['test_score']:.1f} of 1000, n={best['n']})."]
    report = t[t["recipe"] == "report"]
    if len(report):
        r = report.loc[report["test_score"].idxmax()]
        parts.append(f"The report's recipe reaches at best {r['test_score']:.1f} ({r['backbone']}).")
    better = t[t["vs_report"].eq("separable") & (t["delta_vs_report"] > 0)]
    worse = t[t["vs_report"].eq("separable") & (t["delta_vs_report"] < 0)]
    parts.append(f"{len(better)} configuration(s) beat the report's recipe on their backbone beyond seed noise, "
                 f"{len(worse)} do worse beyond it, {int(t['vs_report'].eq('not separable').sum())} are not separable.")
    parts.append(f"Pareto front (score vs cost): {len(front)} configuration(s)"
                 + (f", from {front.iloc[0]['backbone']} / {front.iloc[0]['recipe']} ({front.iloc[0]['cost_s']:.0f} s) "
                    f"to {front.iloc[-1]['backbone']} / {front.iloc[-1]['recipe']} ({front.iloc[-1]['cost_s']:.0f} s)."
                    if len(front) > 1 else ": one configuration is both the cheapest and the best."))
    return " ".join(parts)


_SHORT = (("loss=", ""), ("miner=", "mined:"), ("multi_similarity", "ms"), ("scheduler=", ""), ("augment=", ""),
          ("trainable_blocks=", "unfreeze"), ("samples_per_class=", "m"), ("train_styles=", "styles:"),
          ("centering", "center"), ("rerank=", "rerank:"))


def _short(recipe_label: str) -> str:
    """A compact point label: ``loss=supcon, miner=multi_similarity`` -> ``supcon+mined:ms``."""
    parts = [p for p in recipe_label.split(", ") if not p.startswith("warmup_epochs=")]
    out = "+".join(parts)
    for a, b in _SHORT:
        out = out.replace(a, b)
    return out


def _label_points(ax, t: pd.DataFrame) -> None:
    """Each point's recipe beside it (Pareto points and the report's recipe first, then by score); a
    label that would overlap one already drawn is left out (the table has every row), labels near the
    right edge go to the point's left."""
    ax.autoscale_view()
    drawn: list[tuple[float, float]] = []
    skipped = 0
    x_right = ax.transAxes.transform((0.85, 0))[0]
    order = t.assign(_first=t["pareto"] | (t["recipe"] == "report")).sort_values(
        ["_first", "test_score"], ascending=False)
    for _, r in order.iterrows():
        x, y = ax.transData.transform((r["cost_s"], r["test_score"]))
        if any(abs(x - a) < 60 and abs(y - b) < 10 for a, b in drawn):
            skipped += 1
            continue
        drawn.append((x, y))
        left = x > x_right
        ax.annotate(_short(r["recipe"]), (r["cost_s"], r["test_score"]), fontsize=6,
                    xytext=(-4 if left else 4, 3), ha="right" if left else "left",
                    textcoords="offset points", annotation_clip=True, clip_on=True)
    if skipped:
        ax.text(0.99, 0.01, f"{skipped} overlapping label(s) left out: every row is in the table",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=6, color="0.4")


def figure_score_cost(t: pd.DataFrame, front: pd.DataFrame):
    """Open-set test score vs cost per run, one colour per backbone (plumbing rows: grey crosses), the
    Pareto front of the candidates when it has 2+ points."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    from benchmark.report.figures import _style

    _style()
    fig, ax = plt.subplots(figsize=(9, 5.5), constrained_layout=True)
    names = list(dict.fromkeys(t["backbone"]))
    candidates = [n for n in names if PLUMBING not in n]
    colours = dict(zip(candidates, sns.color_palette("colorblind", len(candidates))))
    for name in names:
        g = t[t["backbone"] == name]
        plumbing = PLUMBING in name
        ax.errorbar(g["cost_s"], g["test_score"], yerr=g["test_score_ci"].fillna(0), fmt="x" if plumbing else "o",
                    ms=6, capsize=3, color="0.55" if plumbing else colours[name], label=name)
    if len(front) > 1:
        ax.step(front["cost_s"], front["test_score"], where="post", color="0.3", ls="--", lw=1, label="Pareto front")
    log = t["cost_s"].max() > 10 * t["cost_s"].min()  # within a decade a log axis has no tick to read
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 200, 500, 1000 rather than 2x10^2
    ax.margins(x=0.06)
    _label_points(ax, t)
    ax.set_xlabel(f"cost per run (s{', log scale' if log else ''}): features + training + evaluation")
    ax.set_ylabel("open-set test score (0–1000)")
    ax.set_title("What should have been submitted? Score vs cost on unseen identities")
    ax.legend(fontsize=8, loc="best")
    return fig


def choice(runs: pd.DataFrame) -> str:
    """What ``benchmark choose`` (validation only) picks among the study's runs, and how it did on test."""
    from benchmark.choose import choose

    picked = choose(runs.drop(columns=[c for c in ("config",) if c in runs.columns]))
    row = runs[runs["run_id"].astype(str).isin(picked["run_ids"])]
    test = pd.to_numeric(row["test/score"], errors="coerce")
    ci = f" ± {picked['ci95']:.1f}" if picked["ci95"] is not None else ""
    sep = {True: "separable from", False: "not separable from", None: "not judged against"}[picked["separated"]]
    runner = picked["runner_up"]
    return (f"`benchmark choose` (val/score only) picks **{picked['experiment']}** "
            f"(val {picked['mean']:.1f}{ci}, n={picked['n_seeds']}; {sep} the runner-up "
            f"{runner['experiment'] if runner else '—'}); its test score, read only afterwards: "
            f"{test.mean():.1f}.")


def section(w, df: pd.DataFrame, confidence: float = 0.95) -> None:
    """Write the section into the report writer ``w`` (``build._Writer``)."""
    c, runs = study_configs(df, confidence)
    t = study_table(c)
    front = pareto_front(t)
    t = t.assign(pareto=t.index.isin(front.index))
    w.reading(read_study(t, front))
    w.table("study_backbones_recipes", t, study_markdown(t))
    w.figure("study_score_vs_cost", figure_score_cost(t, front),
             "What should have been submitted: open-set score vs cost per backbone and recipe")
    w.lines += ["", "Δ = mean difference to the report's recipe (CE head, LR 0.001, 3 epochs) on the same backbone, "
                    "± the Welch 95% interval; *separable* follows the rule above (non-overlapping 95% CIs). Rows "
                    "marked *random init: plumbing* check the pipeline, they are not candidates."]
    w.lines += ["", f"**Choice:** {choice(runs)}"]
