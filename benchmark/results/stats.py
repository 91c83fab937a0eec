"""Statistics of a results set: seeds -> configurations with mean ± t-interval, whether the top
configurations are separable, and the protocol audit (does validation rank like test?).

A *configuration* is every config key except the seed and the run-specific keys
(``common.RUN_SPECIFIC``); its value for a metric is the mean over its seeds, with the half-width
``t_{(1+c)/2, n-1} * s / sqrt(n)`` of the ``c`` (default 95%) confidence interval when it has n >= 2
seeds (Student's t, ``scipy.stats.t``), none with one seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.results.schema import (SETTING_KEYS, Unsupported, config_keys, metric_columns, missing, norm,
                                      row_key)

#: the rule for "not separable", written into the report
SEPARABILITY_RULE = (
    "two configurations are *separable* when the 95% confidence intervals of their mean test score "
    "over seeds (Student's t: mean ± t·s/√n) do not overlap; overlapping intervals = not separable "
    "within seed noise. A configuration with a single seed has no interval, so separability is not judged "
    "for it (a conservative rule: non-overlap implies a significant difference, overlap does not prove "
    "there is none).")

#: metrics whose per-seed values are kept (tuples) for differences and error bars
VALUE_METRICS = ("test/score", "val/score", "time/cost_s", "score_per_minute")


def t_ci(values, confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width, n) of the non-missing ``values``; half-width NaN when n < 2."""
    x = np.asarray([v for v in np.asarray(values, dtype=float).ravel() if not math.isnan(v)])
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, n
    if np.ptp(x) == 0:  # a deterministic configuration (frozen features): no spread, not float noise
        return float(x[0]), 0.0, n
    sd = float(x.std(ddof=1))
    return mean, float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)), n


def diff_ci(a, b, confidence: float = 0.95) -> tuple[float, float]:
    """(mean(a) - mean(b), half-width of its Welch t-interval); half-width NaN unless both have n >= 2."""
    a = np.asarray([v for v in np.asarray(a, dtype=float).ravel() if not math.isnan(v)])
    b = np.asarray([v for v in np.asarray(b, dtype=float).ravel() if not math.isnan(v)])
    if not len(a) or not len(b):
        return math.nan, math.nan
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return d, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return d, float(stats.t.ppf((1 + confidence) / 2, dof) * se)


def pooled_sd(configs: pd.DataFrame, metric: str = "test/score") -> tuple[float, int]:
    """Seed-to-seed standard deviation pooled over the replicated configurations, and how many there are."""
    col = f"{metric}_values"
    if col not in configs.columns:
        return math.nan, 0
    ss, dof, k = 0.0, 0, 0
    for vals in configs[col]:
        x = np.asarray([v for v in vals if not missing(v)], dtype=float)
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            dof += len(x) - 1
            k += 1
    return (math.sqrt(ss / dof) if dof else math.nan), k


# --------------------------------------------------------------------------------------------------
def _labels(configs: pd.DataFrame, keys: list[str], exclude: tuple[str, ...]) -> list[str]:
    """``experiment``, plus ``[key=value, ...]`` where configurations share an experiment name."""
    names = [("?" if missing(v) else str(v)) for v in configs["experiment"]] if "experiment" in configs \
        else [r[0] for r in configs["run_ids"]]
    values = [{k: norm(v) for k, v in zip(keys, row)} for row in configs[keys].itertuples(index=False)]
    labels = list(names)
    for name in set(names):
        same = [i for i, n in enumerate(names) if n == name]
        if len(same) < 2:
            continue
        differing = [k for k in keys if k not in exclude and k != "experiment"
                     and len({json.dumps(values[i][k], default=str) for i in same}) > 1]
        for i in same:
            extra = ", ".join(f"{k}={values[i][k]}" for k in differing)
            labels[i] = f"{name} [{extra}]" if extra else name
    return labels


def aggregate(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per configuration of the successful ``runs`` (see module doc).

    Columns: the configuration keys; ``config`` (unique id: the experiment, plus the keys that
    tell apart configurations sharing its name), ``label`` (the same within one protocol/data
    setting), ``n`` (seeds), ``seeds``, ``run_ids``, ``run_dirs``, ``best_run_dir`` (the seed with
    the highest test score that has a folder); per metric ``m``: ``m`` (mean), ``m_sd``, ``m_ci``
    (half-width, NaN for one seed); ``m_values`` (per-seed values) for ``VALUE_METRICS``.
    """
    if runs.empty:
        return pd.DataFrame(columns=["config", "label", "n"])
    keys = config_keys(runs)
    metrics = metric_columns(runs)
    runs = runs.copy()
    for m in metrics:
        runs[m] = pd.to_numeric(runs[m], errors="coerce")
    rows = []
    for _, g in runs.groupby(row_key(runs, keys), sort=False):
        first = g.iloc[0]
        row = {k: first[k] for k in keys}
        row["n"] = len(g)
        row["seeds"] = tuple(norm(s) for s in g["seed"]) if "seed" in g else ()
        row["run_ids"] = tuple(str(r) for r in g["run_id"]) if "run_id" in g else ()
        dirs = g["run_dir"] if "run_dir" in g else pd.Series([None] * len(g), index=g.index)
        row["run_dirs"] = tuple(None if missing(d) else str(d) for d in dirs)
        with_dir = g[dirs.map(lambda d: not missing(d))]
        if len(with_dir):
            order = with_dir["test/score"].fillna(-np.inf) if "test/score" in with_dir else None
            row["best_run_dir"] = str(with_dir.loc[order.idxmax(), "run_dir"] if order is not None
                                      else with_dir.iloc[0]["run_dir"])
        else:
            row["best_run_dir"] = None
        for m in metrics:
            mean, hw, _ = t_ci(g[m], confidence)
            vals = g[m].dropna()
            row[m] = mean
            row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"{m}_ci"] = hw
            if m in VALUE_METRICS:
                row[f"{m}_values"] = tuple(float(v) for v in vals)
        rows.append(row)
    configs = pd.DataFrame(rows)
    configs.insert(0, "config", _labels(configs, keys, ()))
    configs.insert(1, "label", _labels(configs, keys, SETTING_KEYS))
    return configs


# --------------------------------------------------------------------------------------------------
@dataclass
class Separation:
    """Is the best configuration separable from the runner-up? (``SEPARABILITY_RULE``)."""

    metric: str
    best: str
    runner_up: str | None
    separable: bool | None  # None: not judged (a single seed on one side, or no runner-up)
    #: configurations whose interval overlaps the best's (not separable from it)
    tied: list[str] = field(default_factory=list)
    #: configurations with one seed that could not be judged against the best
    unjudged: list[str] = field(default_factory=list)
    text: str = ""


def _interval(row, metric):
    m, hw = row[metric], row.get(f"{metric}_ci", math.nan)
    return (m - hw, m + hw) if not missing(hw) else None


def separability(configs: pd.DataFrame, metric: str = "test/score", digits: int = 1) -> Separation:
    """Apply ``SEPARABILITY_RULE`` to the best configuration by ``metric`` against all others."""
    c = configs.dropna(subset=[metric]).sort_values(metric, ascending=False, kind="stable")
    if c.empty:
        raise Unsupported(f"no configuration has {metric}")
    best = c.iloc[0]
    if len(c) == 1:
        return Separation(metric, best["label"], None, None,
                          text=f"only one configuration ({best['label']}): nothing to separate")
    second = c.iloc[1]
    bi = _interval(best, metric)
    tied, unjudged = [], []
    for _, r in c.iloc[1:].iterrows():
        ri = _interval(r, metric)
        if bi is None or ri is None:
            unjudged.append(r["label"])
        elif ri[1] >= bi[0]:
            tied.append(r["label"])
    si = _interval(second, metric)

    def show(r, iv):
        return (f"{r['label']} ({r[metric]:.{digits}f} ± {r[f'{metric}_ci']:.{digits}f}, n={r['n']})" if iv
                else f"{r['label']} ({r[metric]:.{digits}f}, n={r['n']})")

    if bi is None or si is None:
        who = ("both have" if bi is None and si is None else
               f"{best['label'] if bi is None else second['label']} has")
        sd, k = pooled_sd(configs, metric)
        noise = (f" For scale: the seed-to-seed SD pooled over {k} replicated configuration(s) is "
                 f"{sd:.{digits}f} points; the gap is {best[metric] - second[metric]:.{digits}f}." if k else "")
        text = (f"Whether the best {show(best, bi)} is separable from the runner-up {show(second, si)} is not judged: "
                f"{who} a single seed, so no confidence interval.{noise} Rerun with more seeds to decide.")
        return Separation(metric, best["label"], second["label"], None, tied, unjudged, text)
    sep = bool(bi[0] > si[1])
    if sep:
        text = (f"The best configuration {show(best, bi)} is separable from the runner-up {show(second, si)}: "
                f"their 95% CIs [{bi[0]:.{digits}f}, {bi[1]:.{digits}f}] and [{si[0]:.{digits}f}, "
                f"{si[1]:.{digits}f}] do not overlap.")
    else:
        text = (f"The top configurations are NOT separable within seed noise: the best {show(best, bi)} has a "
                f"95% CI [{bi[0]:.{digits}f}, {bi[1]:.{digits}f}] that overlaps the runner-up {show(second, si)} "
                f"[{si[0]:.{digits}f}, {si[1]:.{digits}f}]; not separable from the best: {', '.join(tied)}.")
    if unjudged:
        text += f" Not judged (single seed): {len(unjudged)} configuration(s)."
    return Separation(metric, best["label"], second["label"], sep, tied, unjudged, text)


# --------------------------------------------------------------------------------------------------
def protocol_audit(configs: pd.DataFrame, val: str = "val/score", test: str = "test/score") -> pd.DataFrame:
    """Per protocol: does validation rank the configurations like test does?

    One row per protocol present: ``n_configs``; ``spearman_rho`` and ``spearman_p`` between the
    configurations' mean ``val`` and mean ``test`` (scipy.stats.spearmanr; NaN with fewer than 3
    configurations or a constant column); ``gap_mean`` = mean over configurations of val − test, with
    ``gap_ci`` (t-interval over configurations); ``val_pick`` (argmax val), ``test_best`` (argmax
    test), ``picks_right`` (the same configuration), ``regret`` = test score of the test-best minus
    that of the validation pick; ``val_tied`` / ``test_tied``: every configuration has the same score
    (then there is no ranking and the picks mean nothing).
    """
    absent = [m for m in (val, test) if m not in configs.columns]
    if absent:
        raise Unsupported(f"the results have no {', '.join(absent)}")
    if "protocol" not in configs.columns:
        configs = configs.assign(protocol="closed-set")
    rows = []
    for proto, c in configs.groupby(configs["protocol"].map(str), sort=True):
        c = c.dropna(subset=[val, test])
        if c.empty:
            continue
        rho, p = math.nan, math.nan
        if len(c) >= 3 and c[val].nunique() > 1 and c[test].nunique() > 1:
            res = stats.spearmanr(c[val], c[test])
            rho, p = float(res.statistic), float(res.pvalue)
        gap, gap_ci, _ = t_ci(c[val] - c[test])
        vp, tb = c.loc[c[val].idxmax()], c.loc[c[test].idxmax()]
        rows.append({"protocol": proto, "n_configs": len(c), "spearman_rho": rho, "spearman_p": p,
                     "gap_mean": gap, "gap_ci": gap_ci, "val_pick": vp["label"], "test_best": tb["label"],
                     "picks_right": bool(vp["label"] == tb["label"]),
                     "regret": float(tb[test] - vp[test]),
                     "val_tied": len(c) > 1 and c[val].nunique() == 1,
                     "test_tied": len(c) > 1 and c[test].nunique() == 1})
    if not rows:
        raise Unsupported(f"no configuration has both {val} and {test}")
    return pd.DataFrame(rows)
