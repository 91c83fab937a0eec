"""The report's tables (and the data behind its figures) from aggregated configurations
(``results.prepare(df).configs``), their one-line readings and their Markdown.

Every function takes the configurations of one protocol/data setting and returns a DataFrame of
plain numbers (means, ``*_ci`` half-widths, NaN where one seed); it raises ``Unsupported`` with a
one-line reason when the results cannot support it. Scores are the competition score
600·Top-1 + 300·Top-5 + 100·Top-10 (points, 0-1000) on the test split; times are ``time/cost_s``
(the cost of the configuration on its own: features + training + evaluation).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.report.common import ABLATION_KEYS, BASELINE, arch_name, arch_order, describe, fmt_num
from benchmark.results.schema import DEFAULTS, Unsupported, config_keys, matches, missing, norm
from benchmark.results.stats import Separation, diff_ci, separability

METRICS_T1 = ("test/top1", "test/top5", "test/top10", "test/map", "test/score", "time/cost_s")
METRICS_T2 = ("test/score", "test/top1", "test/top5", "test/top10", "test/map")


def _need(configs: pd.DataFrame, *cols: str) -> pd.DataFrame:
    missing_cols = [c for c in cols if c not in configs.columns]
    if configs.empty:
        raise Unsupported("no successful runs")
    if missing_cols:
        raise Unsupported(f"the results have no {', '.join(missing_cols)}")
    return configs


def _distance_from_defaults(row) -> int:
    keys = [k for k in ABLATION_KEYS + ("lr", "epochs") if k in row.index]
    return sum(norm(row[k]) != norm(DEFAULTS[k]) for k in keys)


def _pick_one(c: pd.DataFrame) -> pd.Series:
    """Among configurations of one backbone: the closest to the defaults, then most seeds, then label."""
    c = c.assign(_d=c.apply(_distance_from_defaults, axis=1), _n=-c["n"])
    return c.sort_values(["_d", "_n", "label"], kind="stable").iloc[0]


# -- Table 1 -----------------------------------------------------------------------------------------
def table1(configs: pd.DataFrame) -> pd.DataFrame:
    """Architecture comparison at the baseline settings (``common.BASELINE``): one configuration
    per backbone; columns ``backbone, architecture, config, n`` + mean/``_ci`` of ``METRICS_T1`` +
    ``score_pct_of_best`` (100 × score / best score) and ``speedup_vs_slowest`` (slowest time/cost_s
    ÷ this one)."""
    _need(configs, "test/score", "backbone")
    cand = configs[matches(configs, BASELINE)]
    if cand.empty:
        raise Unsupported("no configuration uses the baseline settings (LR 0.001, 3 epochs, batch size 32, "
                          "augmentation and normalization on, trained head)")
    rows = []
    for b in arch_order(cand["backbone"].map(str)):
        r = _pick_one(cand[cand["backbone"].map(str) == b])
        row = {"backbone": b, "architecture": arch_name(b), "config": r["label"], "n": int(r["n"])}
        for m in METRICS_T1:
            row[m] = r.get(m, math.nan)
            row[f"{m}_ci"] = r.get(f"{m}_ci", math.nan)
        rows.append(row)
    t = pd.DataFrame(rows)
    t["score_pct_of_best"] = 100 * t["test/score"] / t["test/score"].max()
    t["speedup_vs_slowest"] = t["time/cost_s"].max() / t["time/cost_s"]
    return t


def read_table1(t: pd.DataFrame, configs: pd.DataFrame | None = None) -> str:
    best = t.loc[t["test/score"].idxmax()]
    if len(t) == 1:
        return (f"Only {best['architecture']} ran at the baseline settings (score {best['test/score']:.1f}): "
                "no architecture comparison is possible.")
    out = f"{best['architecture']} has the highest score at the baseline settings ({best['test/score']:.1f})"
    fast = t.loc[t["time/cost_s"].idxmin()] if t["time/cost_s"].notna().any() else None
    if fast is not None and fast["backbone"] != best["backbone"]:
        out += (f"; {fast['architecture']} reaches {fast['score_pct_of_best']:.1f}% of it while being "
                f"{fast['speedup_vs_slowest']:.1f}× faster than the slowest "
                f"({fast['time/cost_s']:.0f} s vs {t['time/cost_s'].max():.0f} s)")
    elif fast is not None:
        out += " and is also the fastest"
    worst = t.loc[t["test/score"].idxmin()]
    if len(t) > 2:
        out += f"; {worst['architecture']} is lowest ({worst['score_pct_of_best']:.1f}% of the best)"
    out += "."
    if configs is not None:
        sub = configs[configs["label"].isin(t["config"])]
        sep = separability(sub)
        if sep.separable is False:
            out += f" The top two are not separable within seed noise ({sep.best} vs {sep.runner_up})."
        elif sep.separable:
            out += f" The best is separable from the runner-up ({sep.runner_up}) within seed noise."
    return out


def tied(scores) -> bool:
    """Two or more scores, all the same: no ranking, no best, no effect to read from them."""
    values = np.asarray(pd.Series(scores).dropna(), dtype=float)
    return len(values) > 1 and bool(np.all(values == values[0]))


def count(x: float) -> str:
    """A count as a reader writes it: 240, 1422, 2.5 (never 2.4e+02)."""
    return f"{x:.0f}" if abs(x) >= 10 or float(x).is_integer() else f"{x:.2g}"


# -- Table 2 -----------------------------------------------------------------------------------------
def table2(configs: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The top-``k`` configurations by mean test score: ``rank, config, architecture, lr, epochs, n``
    (lr/epochs NaN without a trained head), ``trained_head``, ``diverged`` (a seed's training diverged),
    mean/``_ci`` of ``METRICS_T2``, ``time_min`` (time/cost_s / 60, ``time_min_ci``) and
    ``vs_best``: best | not separable | separable | not judged (``stats.SEPARABILITY_RULE``)."""
    _need(configs, "test/score")
    c = configs.dropna(subset=["test/score"]).sort_values("test/score", ascending=False, kind="stable").head(k)
    sep = separability(configs)
    t = pd.DataFrame({"rank": range(1, len(c) + 1), "config": c["label"].to_numpy(),
                      "architecture": c["backbone"].map(arch_name).to_numpy() if "backbone" in c else "?",
                      "backbone": c["backbone"].map(str).to_numpy() if "backbone" in c else "?",
                      "lr": c["lr"].to_numpy(), "epochs": c["epochs"].to_numpy(), "n": c["n"].to_numpy()})
    # a configuration without a trained head (embedding=backbone) has no learning rate or epochs
    trained = (c["embedding"].map(str) != "backbone").to_numpy() if "embedding" in c else np.ones(len(c), bool)
    t["trained_head"] = trained
    t.loc[~trained, ["lr", "epochs"]] = math.nan
    t["diverged"] = c["diverged"].fillna(0).to_numpy() > 0 if "diverged" in c else False
    for m in METRICS_T2:
        t[m] = c[m].to_numpy() if m in c else math.nan
        t[f"{m}_ci"] = c[f"{m}_ci"].to_numpy() if f"{m}_ci" in c else math.nan
    cost = c["time/cost_s"].to_numpy() if "time/cost_s" in c else np.full(len(c), math.nan)
    cost_ci = c["time/cost_s_ci"].to_numpy() if "time/cost_s_ci" in c else np.full(len(c), math.nan)
    t["time_min"] = cost / 60
    t["time_min_ci"] = cost_ci / 60
    t["vs_best"] = ["best" if lab == sep.best else "not separable" if lab in sep.tied
                    else "not judged" if lab in sep.unjudged else "separable" for lab in t["config"]]
    t.attrs["separation"] = sep
    return t


def read_table2(t: pd.DataFrame) -> str:
    top = t.iloc[0]
    n_top = int((t["test/score"] == top["test/score"]).sum())
    if n_top > 1:  # a tie at the top: no best configuration to name, no separability to judge
        who = f"all {n_top} configurations shown" if n_top == len(t) else f"{n_top} configurations"
        return (f"The runs are tied: {who} have the same test score ({top['test/score']:.1f}), so none is best "
                "and no conclusion about what helps can be drawn from them.")
    out = f"{top['config']} has the highest test score ({top['test/score']:.1f})"
    if len(t) > 1:
        out += f", {top['test/score'] - t.iloc[1]['test/score']:.1f} points above {t.iloc[1]['config']}"
    archs = t["architecture"].value_counts()
    out += f"; the top {len(t)} hold " + ", ".join(f"{n} {a}" for a, n in archs.items()) + " configuration(s)."
    sep: Separation | None = t.attrs.get("separation")
    return out + (f" {sep.text}" if sep is not None else "")


# -- sweep families (Figures 1, 2) -------------------------------------------------------------------
def _families(configs: pd.DataFrame, vary: str) -> dict[str, pd.DataFrame]:
    keys = [k for k in config_keys(configs) if k not in ("experiment", vary)]
    fk = configs.apply(lambda r: json.dumps([norm(r[k]) for k in keys], default=str), axis=1)
    return {k: g for k, g in configs.groupby(fk, sort=False) if g[vary].map(norm).nunique() >= 2}


def _differences(row, skip: tuple[str, ...], configs: pd.DataFrame) -> list[str]:
    """What sets a configuration apart from the baseline, in words (lr/epochs and ablation keys).
    A key every configuration shares (e.g. ``--set weights=random`` on the whole sweep) sets none apart."""
    keys = [k for k in ("lr", "epochs") + ABLATION_KEYS if k in row.index and k not in skip
            and configs[k].map(norm).nunique(dropna=False) > 1]
    return [describe(k, row[k]) for k in keys if norm(row[k]) != norm(DEFAULTS[k])]


def lr_sweep(configs: pd.DataFrame) -> pd.DataFrame:
    """Score vs learning rate: every family of configurations that differ only in ``lr`` (>= 2 values).
    Columns ``line`` (legend label), ``backbone``, ``epochs``, ``main`` (the family runs at the baseline
    epochs and defaults otherwise), ``lr``, ``config``, ``n``, ``test/score``, ``test/score_ci``."""
    _need(configs, "test/score", "lr")
    rows = []
    for fam in _families(configs, "lr").values():
        first = fam.iloc[0]
        diffs = _differences(first, ("lr",), configs)
        line = ", ".join([arch_name(first["backbone"])] + diffs)
        for _, r in fam.sort_values("lr").iterrows():
            rows.append({"line": line, "backbone": str(r["backbone"]), "epochs": r["epochs"], "main": not diffs,
                         "lr": float(r["lr"]), "config": r["label"], "n": int(r["n"]),
                         "test/score": r["test/score"], "test/score_ci": r.get("test/score_ci", math.nan)})
    if not rows:
        raise Unsupported("no two configurations differ only in learning rate")
    t = pd.DataFrame(rows)
    order = {b: i for i, b in enumerate(arch_order(t["backbone"]))}
    return t.assign(_o=t["backbone"].map(order), _m=~t["main"]).sort_values(["_m", "_o", "line", "lr"]) \
        .drop(columns=["_o", "_m"]).reset_index(drop=True)


def read_lr(t: pd.DataFrame) -> str:
    main = t[t["main"]] if t["main"].any() else t
    if tied(main["test/score"]):
        lo, hi = fmt_num(main["lr"].min()), fmt_num(main["lr"].max())
        return (f"The runs are tied: every learning rate from {lo} to {hi} "
                f"scores {main['test/score'].iloc[0]:.1f}, so no learning rate is best here.")
    parts, best_lrs = [], {}
    for line, g in main.groupby("line", sort=False):
        g = g.sort_values("lr")
        best_lrs[line] = fmt_num(g.loc[g["test/score"].idxmax(), "lr"])
        lo, hi = g.iloc[0], g.iloc[-1]
        pct = 100 * (hi["test/score"] - lo["test/score"]) / lo["test/score"]
        parts.append(f"{line} {pct:+.1f}% ({lo['test/score']:.1f}→{hi['test/score']:.1f})")
    lrs = set(best_lrs.values())
    where = "at the baseline epochs" if t["main"].any() else "in these sweeps"
    who = "every architecture" if len(best_lrs) > 1 else next(iter(best_lrs))
    head = (f"LR {lrs.pop()} is best for {who} {where}" if len(lrs) == 1 else
            f"The best LR {where} differs: " + ", ".join(f"{k} {v}" for k, v in best_lrs.items()))
    lo_lr, hi_lr = fmt_num(main["lr"].min()), fmt_num(main["lr"].max())
    return f"{head}; from LR {lo_lr} to {hi_lr} the score changes by " + ", ".join(parts) + "."


def epoch_sweep(configs: pd.DataFrame) -> pd.DataFrame:
    """Score vs training epochs for one family of configurations that differ only in ``epochs``:
    the one with most epoch values, preferring the baseline LR/settings and the baseline backbone.
    Columns ``family`` (label), ``backbone``, ``epochs``, ``config``, ``n``, ``test/score(_ci)``,
    ``time/cost_s``, ``run_dirs``."""
    _need(configs, "test/score", "epochs")
    fams = _families(configs, "epochs")
    if not fams:
        raise Unsupported("no two configurations differ only in the number of epochs")

    def rank(g):
        first = g.iloc[0]
        return (-g["epochs"].nunique(), len(_differences(first, ("epochs",), configs)),
                norm(first.get("backbone")) != DEFAULTS["backbone"], str(first.get("backbone")))
    fam = min(fams.values(), key=rank).sort_values("epochs")
    first = fam.iloc[0]
    family = ", ".join([arch_name(first["backbone"])] + _differences(first, ("epochs",), configs) +
                       ([describe("lr", first["lr"])] if norm(first["lr"]) == norm(DEFAULTS["lr"]) else []))
    return pd.DataFrame({"family": family, "backbone": str(first["backbone"]), "epochs": fam["epochs"].to_numpy(),
                         "config": fam["label"].to_numpy(), "n": fam["n"].to_numpy(),
                         "test/score": fam["test/score"].to_numpy(),
                         "test/score_ci": fam.get("test/score_ci", pd.Series(math.nan, index=fam.index)).to_numpy(),
                         "time/cost_s": fam.get("time/cost_s", pd.Series(math.nan, index=fam.index)).to_numpy(),
                         "run_dirs": fam["run_dirs"].to_numpy()})


def read_epochs(t: pd.DataFrame) -> str:
    t = t.sort_values("epochs")
    if tied(t["test/score"]):
        return (f"The runs are tied: {t['family'].iloc[0]} scores {t['test/score'].iloc[0]:.1f} at every number of "
                f"epochs ({', '.join(f'{e:g}' for e in t['epochs'])}), so there is no peak and no overfitting to read.")
    peak = t.loc[t["test/score"].idxmax()]
    first = t.iloc[0]
    out = f"{t['family'].iloc[0]} peaks at {peak['epochs']:g} epochs (score {peak['test/score']:.1f})"
    if peak["epochs"] != first["epochs"]:
        out += f", {peak['test/score'] - first['test/score']:+.1f} from {first['epochs']:g} epoch(s)"
    later = t[t["epochs"] > peak["epochs"]]
    if len(later):
        out += "; after the peak: " + ", ".join(f"{r['test/score'] - peak['test/score']:+.1f} at {r['epochs']:g}"
                                                 for _, r in later.iterrows())
        out += " (overfitting)" if (later["test/score"] < peak["test/score"]).all() else ""
    else:
        out += "; more epochs may still help"
    return out + "."


def histories(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch history (``history.csv``) of each configuration of ``sweep`` (``epoch_sweep``: its
    ``config`` and ``run_dirs``), averaged over its seeds.
    Returns long rows: ``config, epoch`` + history columns + ``n_runs``; empty when no folder has one."""
    frames = []
    for config, dirs in dict(zip(sweep["config"], sweep["run_dirs"])).items():
        hs = []
        for d in dirs:
            if d and (Path(d) / "history.csv").is_file():
                try:
                    h = pd.read_csv(Path(d) / "history.csv")
                except (pd.errors.EmptyDataError, pd.errors.ParserError):
                    continue
                if "epoch" in h.columns and len(h):
                    hs.append(h)
        if hs:
            h = pd.concat(hs).groupby("epoch", as_index=False).mean(numeric_only=True)
            h["n_runs"] = len(hs)
            h.insert(0, "config", config)
            frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["config", "epoch"])


# -- Figure 3 ----------------------------------------------------------------------------------------
def ablations(configs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Single-change ablations: pairs of configurations that differ in exactly one design choice
    (``common.ABLATION_KEYS``) where the reference keeps its default. Columns ``ablation`` (in words),
    ``key``, ``value``, ``config``, ``reference``, ``backbone``, ``delta`` (variant − reference mean test
    score), ``delta_ci`` (Welch t-interval; NaN unless both have 2+ seeds), ``delta_pct`` (% of the
    reference), ``score``, ``reference_score``."""
    _need(configs, "test/score")
    keys = [k for k in config_keys(configs) if k != "experiment"]
    vals = {i: {k: norm(r[k]) for k in keys} for i, r in configs.iterrows()}
    rows = []
    for i, vi in vals.items():
        for j, vj in vals.items():
            diff = [k for k in keys if vi[k] != vj[k]]
            if len(diff) != 1 or diff[0] not in ABLATION_KEYS:
                continue
            k = diff[0]
            if vj[k] != norm(DEFAULTS[k]) or vi[k] == norm(DEFAULTS[k]):
                continue  # j must be the reference (default value), i the variant
            v, r = configs.loc[i], configs.loc[j]
            d, hw = diff_ci(v.get("test/score_values", (v["test/score"],)),
                            r.get("test/score_values", (r["test/score"],)), confidence)
            rows.append({"ablation": describe(k, v[k]), "key": k, "value": vi[k], "config": v["label"],
                         "reference": r["label"], "backbone": str(v.get("backbone")), "delta": d, "delta_ci": hw,
                         "delta_pct": 100 * d / r["test/score"], "score": v["test/score"],
                         "reference_score": r["test/score"], "n": int(v["n"]), "reference_n": int(r["n"])})
    if not rows:
        raise Unsupported("no pair of configurations differs in exactly one design choice "
                          f"({', '.join(ABLATION_KEYS[:4])}, ...) from its default")
    return pd.DataFrame(rows).sort_values("delta", kind="stable").reset_index(drop=True)


def read_ablations(t: pd.DataFrame) -> str:
    if (t["delta"] == 0).all():
        return (f"The runs are tied: none of the {len(t)} change(s) moves the test score (Δ 0.0 for each), so no "
                "design choice can be ranked from them.")
    size = t["delta"].abs()
    worst, mild = t.loc[size.idxmax()], t.loc[size.idxmin()]
    out = f"Largest change: {worst['ablation']} ({worst['delta']:+.1f} points, {worst['delta_pct']:+.1f}%)"
    if len(t) > 1:
        out += f"; smallest: {mild['ablation']} ({mild['delta']:+.1f}, {mild['delta_pct']:+.1f}%)"
    hurt = t[t["delta"] < 0]
    out += f"; {len(hurt)} of {len(t)} changes lower the score"
    judged = t.dropna(subset=["delta_ci"])
    if len(judged):
        within = judged[judged["delta"].abs() <= judged["delta_ci"]]
        out += (f"; within seed noise (95% CI of the difference includes 0): "
                f"{', '.join(within['ablation']) if len(within) else 'none'}")
    return out + "."


# -- Figures 4, 5 ------------------------------------------------------------------------------------
def efficiency(configs: pd.DataFrame) -> pd.DataFrame:
    """Score per minute (test score ÷ time/cost_s in minutes) per architecture, over all of its
    configurations: ``backbone, architecture, n_configs, score_per_minute`` (mean of the
    configurations' means), ``min``, ``max``, ``test/score``, ``time/cost_s`` (means) and
    ``ratio_vs_lowest``."""
    _need(configs, "score_per_minute", "backbone")
    c = configs.dropna(subset=["score_per_minute"])
    if c.empty:
        raise Unsupported("no configuration has score_per_minute")
    rows = []
    for b in arch_order(c["backbone"].map(str)):
        g = c[c["backbone"].map(str) == b]
        rows.append({"backbone": b, "architecture": arch_name(b), "n_configs": len(g),
                     "score_per_minute": g["score_per_minute"].mean(), "min": g["score_per_minute"].min(),
                     "max": g["score_per_minute"].max(), "median": g["score_per_minute"].median(),
                     "test/score": g["test/score"].mean(),
                     "time/cost_s": g["time/cost_s"].mean() if "time/cost_s" in g else math.nan})
    t = pd.DataFrame(rows)
    t["ratio_vs_lowest"] = t["score_per_minute"] / t["score_per_minute"].min()
    return t


def read_efficiency(t: pd.DataFrame) -> str:
    best = t.loc[t["score_per_minute"].idxmax()]
    if len(t) == 1:  # nothing to compare with: say what it costs, not that it wins
        return (f"Only {best['architecture']} ran: {best['score_per_minute']:.1f} points per minute on average over "
                f"its {best['n_configs']} configuration(s) (from {best['min']:.1f} to {best['max']:.1f}); no "
                "architecture comparison is possible.")
    low = t.loc[t["score_per_minute"].idxmin()]
    out = (f"{best['architecture']} is the most efficient on average: {best['score_per_minute']:.1f} points per "
           f"minute (mean over its {best['n_configs']} configuration(s), median {best['median']:.1f}), "
           f"{best['ratio_vs_lowest']:.2f}× {low['architecture']} ({low['score_per_minute']:.1f})")
    beaten = t[(t["backbone"] != best["backbone"]) & (t["score_per_minute"] > best["median"])]
    if not beaten.empty:  # a few cheap configurations lift the mean above an architecture its typical one trails
        other = beaten.loc[beaten["score_per_minute"].idxmax()]
        out += (f"; but its median configuration is below {other['architecture']}'s mean "
                f"({other['score_per_minute']:.1f}): a few cheap configurations lift its mean, so compare "
                "configurations in Figure 5, not architectures")
    return out + "."


def pareto(configs: pd.DataFrame) -> pd.DataFrame:
    """Score vs cost: ``config, backbone, time/cost_s(_ci), test/score(_ci), n, pareto`` (no other
    configuration is both cheaper-or-equal and better), sorted by time."""
    _need(configs, "test/score", "time/cost_s")
    c = configs.dropna(subset=["test/score", "time/cost_s"]).sort_values(["time/cost_s", "test/score"],
                                                                         ascending=[True, False])
    if c.empty:
        raise Unsupported("no configuration has both test/score and time/cost_s")
    best, flags = -math.inf, []
    for s in c["test/score"]:
        flags.append(bool(s > best))
        best = max(best, s)
    return pd.DataFrame({"config": c["label"].to_numpy(), "backbone": c["backbone"].map(str).to_numpy(),
                         "time/cost_s": c["time/cost_s"].to_numpy(),
                         "time/cost_s_ci": c.get("time/cost_s_ci", pd.Series(math.nan, index=c.index)).to_numpy(),
                         "test/score": c["test/score"].to_numpy(),
                         "test/score_ci": c.get("test/score_ci", pd.Series(math.nan, index=c.index)).to_numpy(),
                         "n": c["n"].to_numpy(), "pareto": flags})


def read_pareto(t: pd.DataFrame) -> str:
    front = t[t["pareto"]]
    best = t.loc[t["test/score"].idxmax()]
    cheap = front.iloc[0]
    out = (f"Pareto-optimal (no configuration both cheaper and better): {', '.join(front['config'])}; the cheapest "
           f"is {cheap['config']} ({cheap['test/score']:.1f} in {cheap['time/cost_s']:.0f} s)")
    if best["config"] != cheap["config"]:
        out += (f", the best {best['config']} adds {best['test/score'] - cheap['test/score']:.1f} points for "
                f"{best['time/cost_s'] / cheap['time/cost_s']:.1f}× the time")
    return out + "."


# -- protocol audit, failed runs ----------------------------------------------------------------------
def read_audit(t: pd.DataFrame) -> str:
    parts = []
    for _, r in t.iterrows():
        if r.get("val_tied") or r.get("test_tied"):  # a tie has no ranking: nothing to correlate or pick
            which = " and ".join(s for s, k in (("validation", "val_tied"), ("test", "test_tied")) if r.get(k))
            parts.append(f"{r['protocol']}: the runs are tied on {which} ({r['n_configs']} configurations with one "
                         f"score), so there is no ranking to compare and no pick to judge; val − test gap "
                         f"{r['gap_mean']:+.1f} points on average")
            continue
        rho = ("ρ n/a (< 3 configurations)" if r["n_configs"] < 3 else "ρ n/a") if missing(r["spearman_rho"]) \
            else f"Spearman ρ = {r['spearman_rho']:.2f}"
        pick = ("validation would have picked the right model" if r["picks_right"] else
                f"validation would have picked {r['val_pick']} instead of {r['test_best']} "
                f"(−{r['regret']:.1f} test points)")
        parts.append(f"{r['protocol']}: {rho} over {r['n_configs']} configurations, val − test gap "
                     f"{r['gap_mean']:+.1f} points on average; {pick}")
    return "; ".join(parts) + "."


def failed_runs(failed: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("run_id", "experiment", "backbone", "protocol", "seed", "error") if c in failed.columns]
    t = failed[cols].copy()
    if "error" in t:
        t["error"] = t["error"].map(lambda e: "(no error recorded)" if missing(e) else str(e).strip().splitlines()[-1])
    return t.reset_index(drop=True)


# -- What the numbers are measured on ------------------------------------------------------------------
SPLIT_NAMES = {"val": "validation", "test": "test"}


def split_facts(configs: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Per split: (queries, gallery size per query, same-identity items per query), medians over the
    configurations (one data setting: they agree unless images were skipped); splits not recorded are absent."""
    out = {}
    for split in SPLIT_NAMES:
        cols = [f"{split}/n_queries", f"{split}/n_gallery", f"{split}/positives"]
        if all(col in configs.columns for col in cols) and configs[cols].notna().all(axis=1).any():
            out[split] = tuple(float(configs[col].median()) for col in cols)
    return out


def measured_on(configs: pd.DataFrame) -> str | None:
    """One line for beside a metric table: what each split's numbers are measured on."""
    facts = split_facts(configs)
    if not facts:
        return None
    return "Measured on: " + "; ".join(
        f"{SPLIT_NAMES[s]} {count(q)} queries, each against a gallery of {count(g)} holding {count(p)} same-identity "
        f"item{'' if p == 1 else 's'} on average" for s, (q, g, p) in facts.items()) + "."


def split_difference(configs: pd.DataFrame) -> str | None:
    """A sentence when validation and test are not the same retrieval task (gallery size or positives
    differ by more than 10%): then their levels are not comparable, only their rankings."""
    facts = split_facts(configs)
    if set(facts) != set(SPLIT_NAMES):
        return None
    (_, gv, pv), (_, gt, pt) = facts["val"], facts["test"]
    if abs(gv - gt) <= 0.1 * max(gv, gt) and abs(pv - pt) <= 0.1 * max(pv, pt):
        return None
    return (f"Validation and test are different retrieval tasks here: a validation query has {count(pv)} "
            f"same-identity item{'' if pv == 1 else 's'} among {count(gv)}, a test query {count(pt)} among "
            f"{count(gt)}. Top-k and the score "
            "depend on both, so a val − test difference in level reflects the split sizes as much as overfitting; "
            "compare how the two rank configurations (Spearman ρ), not their levels.")


# -- Markdown ----------------------------------------------------------------------------------------
def cell(mean, ci=math.nan, digits: int = 3, suffix: str = "") -> str:
    """``0.320 ± 0.012`` (a 95% CI half-width when there are seeds), ``0.320`` otherwise, ``–`` when missing."""
    if missing(mean):
        return "–"
    s = f"{mean:.{digits}f}"
    return s + (f" ± {ci:.{digits}f}" if not missing(ci) else "") + suffix


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    esc = [[str(v).replace("|", "\\|").replace("\n", " ") for v in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc])


def frame_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """Any DataFrame as a Markdown table (numbers rounded)."""
    def fmt(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            if math.isnan(v):
                return "–"
            return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits if abs(v) < 10 else 1}f}"
        return "–" if missing(v) else str(v)
    return markdown([str(c) for c in df.columns], [[fmt(v) for v in r] for r in df.itertuples(index=False)])


def table1_markdown(t: pd.DataFrame) -> str:
    headers = ["Architecture", "Configuration", "n", "Top-1", "Top-5", "Top-10", "mAP", "Score", "Time (s)"]
    rows = [[r["architecture"], r["config"], str(r["n"])] +
            [cell(r[m], r[f"{m}_ci"]) for m in METRICS_T1[:4]] +
            [cell(r["test/score"], r["test/score_ci"], 1), cell(r["time/cost_s"], r["time/cost_s_ci"], 0)]
            for _, r in t.iterrows()]
    if len(t) < 2:  # one architecture: nothing to be relative to
        return markdown(headers, rows)
    rows.append(["**Relative performance**"] + [""] * (len(headers) - 1))
    for _, r in t.iterrows():
        speed = r["speedup_vs_slowest"]
        speed_s = "–" if missing(speed) else ("1.0× (slowest)" if np.isclose(speed, 1) else f"{speed:.1f}× faster")
        rows.append([r["architecture"], "", ""] + ["–"] * 4 + [f"{r['score_pct_of_best']:.1f}%", speed_s])
    return markdown(headers, rows)


def table2_markdown(t: pd.DataFrame) -> str:
    headers = ["#", "Configuration", "Model", "LR", "Epochs", "n", "Score", "Top-1", "Top-5", "Top-10", "mAP",
               "Time (min)", "vs best"]
    rows = [[str(r["rank"]), r["config"] + (" ⚠ diverged" if r["diverged"] else ""), r["architecture"],
             fmt_num(r["lr"]) if r["trained_head"] else "no head",
             fmt_num(r["epochs"]) if r["trained_head"] else "no head", str(r["n"]),
             cell(r["test/score"], r["test/score_ci"], 1)] + [cell(r[m], r[f"{m}_ci"]) for m in METRICS_T2[1:]] +
            [cell(r["time_min"], r["time_min_ci"], 1), r["vs_best"]] for _, r in t.iterrows()]
    return markdown(headers, rows)


def audit_markdown(t: pd.DataFrame) -> str:
    headers = ["Protocol", "Configurations", "Spearman ρ (val vs test score)", "p", "Mean val − test gap",
               "Val picks", "Test best", "Right pick?", "Test points lost"]
    def pval(p):
        return "–" if missing(p) else "<0.001" if p < 0.001 else f"{p:.3f}"

    rows = [[r["protocol"], str(r["n_configs"]), cell(r["spearman_rho"], digits=2), pval(r["spearman_p"]),
             cell(r["gap_mean"], r["gap_ci"], 1), r["val_pick"], r["test_best"],
             "tied" if r.get("val_tied") or r.get("test_tied") else "yes" if r["picks_right"] else "no",
             cell(r["regret"], digits=1)] for _, r in t.iterrows()]
    return markdown(headers, rows)


def ablations_markdown(t: pd.DataFrame) -> str:
    headers = ["Change", "Configuration", "Reference", "Score", "Reference score", "Δ score", "Δ %"]
    rows = [[r["ablation"], r["config"], r["reference"], cell(r["score"], digits=1),
             cell(r["reference_score"], digits=1), cell(r["delta"], r["delta_ci"], 1, ""),
             f"{r['delta_pct']:+.1f}%"] for _, r in t.iterrows()]
    return markdown(headers, rows)


def lr_markdown(t: pd.DataFrame) -> str:
    return markdown(["Line", "LR", "Configuration", "n", "Score"],
                    [[r["line"], fmt_num(r["lr"]), r["config"], str(r["n"]),
                      cell(r["test/score"], r["test/score_ci"], 1)] for _, r in t.iterrows()])


def epochs_markdown(t: pd.DataFrame) -> str:
    return markdown(["Epochs", "Configuration", "n", "Score", "Time (s)"],
                    [[fmt_num(r["epochs"]), r["config"], str(r["n"]), cell(r["test/score"], r["test/score_ci"], 1),
                      cell(r["time/cost_s"], digits=0)] for _, r in t.iterrows()])


def efficiency_markdown(t: pd.DataFrame) -> str:
    relative = len(t) > 1  # "1.0× lowest" of a single architecture says nothing
    return markdown(["Architecture", "Configurations", "Score / min (mean)", "min", "max", "Mean score",
                     "Mean time (s)"] + (["× lowest"] if relative else []),
                    [[r["architecture"], str(r["n_configs"]), cell(r["score_per_minute"], digits=1),
                      cell(r["min"], digits=1), cell(r["max"], digits=1), cell(r["test/score"], digits=1),
                      cell(r["time/cost_s"], digits=0)] + ([f"{r['ratio_vs_lowest']:.1f}×"] if relative else [])
                     for _, r in t.iterrows()])


def pareto_markdown(t: pd.DataFrame) -> str:
    return markdown(["Configuration", "Architecture", "Time (s)", "Score", "Pareto-optimal"],
                    [[r["config"], arch_name(r["backbone"]), cell(r["time/cost_s"], r["time/cost_s_ci"], 0),
                      cell(r["test/score"], r["test/score_ci"], 1), "yes" if r["pareto"] else ""]
                     for _, r in t.iterrows()])


def failed_markdown(t: pd.DataFrame) -> str:
    return frame_markdown(t)


# -- Search: the best configuration found over time (issue 18) -------------------------------------------
SEARCH_KEYS = ("sweep", "sweep_method", "early_terminate", "search_seed")


def search_progress(df: pd.DataFrame, metric: str = "val/score") -> pd.DataFrame:
    """Per sweep run (rows of ``df`` with the sweep that started them), in start order: ``search``
    (method, seed, sweep name), ``run`` (1, 2, ...), ``minutes`` since the search's first start at the
    run's end, and ``best_val`` / ``best_test`` / ``best_run``: the best ``metric`` of the search's
    finished (ok) runs so far and that run's test score. Stopped and failed runs cost runs and
    minutes but are never the best (``benchmark choose`` does not rank them either)."""
    need = {"sweep_method", "started", "ended", metric}
    if not need <= set(df.columns) or df["sweep_method"].isna().all():
        raise Unsupported("no run records the sweep that started it (runs of `benchmark sweep` do)")
    runs = df[df["sweep_method"].notna()].copy()
    for k in SEARCH_KEYS:
        runs[k] = runs[k] if k in runs else None
    rows = []
    for key, g in runs.groupby([runs[k].map(lambda v: "" if missing(v) else str(norm(v))) for k in SEARCH_KEYS],
                               sort=True):
        sweep, method, stop, seed = key
        method += f" + {stop}" if stop else ""
        g = g.sort_values(["started", "run_id"])
        t0 = float(pd.to_numeric(g["started"]).min())
        best = (-math.inf, None, None)
        label = f"{method}" + (f" seed {seed}" if seed != "" else "") + f" ({sweep})"
        for i, (_, r) in enumerate(g.iterrows(), 1):
            v = pd.to_numeric(r.get(metric), errors="coerce")
            if r.get("status") == "ok" and not missing(v) and v > best[0]:
                best = (float(v), r.get("test/score"), r["run_id"])
            rows.append({"search": label, "method": method, "search_seed": seed, "sweep": sweep, "run": i,
                         "run_id": r["run_id"], "status": r.get("status"),
                         "minutes": (float(r["ended"]) - t0) / 60, metric: v,
                         "best_val": best[0] if best[2] is not None else math.nan,
                         "best_test": best[1], "best_run": best[2]})
    return pd.DataFrame(rows)


def search_summary(progress: pd.DataFrame) -> pd.DataFrame:
    """One row per search: runs, stopped and failed runs, minutes, the best validation score found,
    the run and minute it was first reached (``best_at_run``, ``best_at_min``), the test score of that run."""
    out = []
    for label, g in progress.groupby("search", sort=False):
        last = g.iloc[-1]
        first = g[g["best_val"] >= last["best_val"]].iloc[0] if not missing(last["best_val"]) else None
        out.append({"search": label, "method": last["method"], "runs": len(g),
                    "stopped": int((g["status"] == "stopped").sum()), "failed": int((g["status"] == "failed").sum()),
                    "minutes": float(g["minutes"].max()), "best_val": last["best_val"],
                    "best_at_run": None if first is None else int(first["run"]),
                    "best_at_min": math.nan if first is None else float(first["minutes"]),
                    "best_test": last["best_test"], "best_run": last["best_run"]})
    return pd.DataFrame(out)


def read_search(t: pd.DataFrame) -> str:
    if t["best_val"].isna().all():
        return f"{len(t)} search(es), none has a finished run yet."
    parts = [f"{r['search']}: {r['best_val']:.1f} (first at run {r['best_at_run']} of {r['runs']}, "
             f"{r['best_at_min']:.2f} of {r['minutes']:.2f} min; {r['stopped']} stopped early), its test score "
             f"{r['best_test']:.1f}" for _, r in t.dropna(subset=["best_val"]).iterrows()]
    top = t[t["best_val"] == t["best_val"].max()]
    verdict = ("One search: nothing to compare it with." if len(t) == 1 else
               f"All {len(t)} searches found the same best validation score: they differ only in how soon."
               if len(top) == len(t) else f"Highest validation score: {', '.join(top['search'])}.")
    return ("Best validation score per search: " + "; ".join(parts) + f". {verdict} The test score is read "
            "only for each search's validation pick, never to choose.")


def search_markdown(t: pd.DataFrame) -> str:
    headers = ["Search", "Runs", "Stopped", "Failed", "Minutes", "Best val score", "First at run",
               "First at minute", "Its test score", "Best run"]
    rows = [[r["search"], str(r["runs"]), str(r["stopped"]), str(r["failed"]), f"{r['minutes']:.1f}",
             cell(r["best_val"], digits=1), "–" if missing(r["best_at_run"]) else str(r["best_at_run"]),
             cell(r["best_at_min"], digits=2), cell(r["best_test"], digits=1), str(r["best_run"] or "–")]
            for _, r in t.iterrows()]
    return markdown(headers, rows)
