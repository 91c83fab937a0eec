"""Pick the configuration to submit from a results table, on validation numbers only.

The report chose its model on numbers that did not predict the competition (its section 1.3);
choosing on the *test* split would repeat that mistake one level up: the test split then stops
being an unbiased estimate of the chosen configuration. So ``choose`` refuses ``test/`` metrics
(and ``score_per_minute``, which is derived from ``test/score``) and drops every ``test/`` column
that a test label went into before it looks at the table: it cannot read them even by accident. The
label-free ones stay (``LABEL_FREE``: the unsupervised validators, ``benchmark.evaluation.validators``,
and the collapse flag): ``--by test/validator/NAME`` chooses on the unlabeled test set itself, as a
competitor can on the competition's, and reads no test label.

What it ranks by is a rule (``rule_columns``) of quality measures only (``criteria``): a ranking metric
of the validation split (``benchmark.evaluation.measures.RANKING``: ``val/score``, the default,
``val/top1`` ... ``val/map``), a validator (``benchmark.evaluation.validators.RECORDED``, each in its
own direction: ``val/validator/NAME``; ``validator/NAME`` and the bare ``NAME`` are the validation
split's; ``test/validator/NAME`` the test split's), a bare metric name (``score``) being ``val/``'s too;
or a rank average of several distinct ones joined by ``+`` (``val/score+validator/cycle``): each
component ranks the runs it can rank as percentiles (``pandas.Series.rank(pct=True)``, ties averaged,
1 = that component's best run), and a run's value is the mean of its components' percentiles (higher
is better). Anything else a record holds is not a criterion and is refused in one line listing the
valid names, before the results are read: the split facts (``val/n_queries``, ``val/identities``,
``val/positives``), the collapse flag ``val/degenerate`` (it leaves runs out instead), times, losses.

Runs are grouped into *configurations* as the report groups them (``benchmark.results.schema``):
the experiment name plus every config key except the run-specific ones (``RUN_SPECIFIC``: ``seed``
and the keys that do not change results: data and cache paths, device, workers, tracking). A
configuration's value is the mean of its seeds' metric, with a 95% confidence half-width from
Student's t (``benchmark.results.stats.t_ci``) when it has more than one seed. The best
configuration's config is taken from its best seed's ``config.yaml`` (or, without a run folder,
from the table's columns).

``write_best`` writes ``best.yaml``: a config file that ``benchmark.config.load_yaml`` reads as is;
the selection facts are YAML comments on top of it (``read_selection`` gives them back as a dict).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.config import FIELDS, Config, ConfigError, dump_yaml, from_dict, head_value
from benchmark.evaluation.measures import RANKING
from benchmark.evaluation.validators import PREFIX, RECORDED
from benchmark.files import write_atomic
from benchmark.results.schema import RUN_SPECIFIC, SETTING_KEYS, WITH_METRICS, missing, norm, row_key
from benchmark.results.stats import t_ci

#: config keys that define the validation set: values of different ones are not comparable (the
#: report's SETTING_KEYS, plus where the data was read from), in config order
EVALUATION_DATA = tuple(k for k in FIELDS if k in SETTING_KEYS or k == "data_home")
#: metrics that are (or are computed from) the test split: never used to choose
TEST_DERIVED = ("score_per_minute",)
#: test-split columns computed without a test label (name prefixes): the validators and the collapse flag
LABEL_FREE = (f"test/{PREFIX}", "test/degenerate")
#: how ``--by`` joins the components of a rank average
JOIN = "+"
_SELECTION_TAG = "# selection-json: "


def _is_test_metric(name: str) -> bool:
    return (name.startswith("test/") and not name.startswith(LABEL_FREE)) or name in TEST_DERIVED


def criteria() -> dict[str, bool]:
    """Every column ``--by`` may rank by, and whether higher is better: the validation split's ranking
    metrics (``measures.RANKING``: all higher), then each validator on the validation and the test split
    (label-free), in its own direction (``Validator.higher``)."""
    return {**{f"val/{m}": True for m in RANKING},
            **{f"{split}/{PREFIX}{name}": v.higher for split in ("val", "test") for name, v in RECORDED.items()}}


def _higher_is_better(metric: str) -> bool:
    return criteria()[metric]


def _valid_names() -> str:
    """The criteria in words, for the one line that refuses another name."""
    said = [f"{n} ({'higher' if v.higher else 'lower'} is better)" for n, v in RECORDED.items()]
    return (f"a ranking metric {', '.join(f'val/{m}' for m in RANKING)}; a validator {', '.join(said)} as "
            f"val/{PREFIX}NAME, {PREFIX}NAME or NAME, or test/{PREFIX}NAME (reads no test label); "
            f"a bare metric name (score) is val/'s; or several distinct ones joined by {JOIN!r} (rank average)")


def rule_columns(by: str) -> list[str]:
    """The columns a ``--by`` rule ranks by, or a ConfigError in one line listing the valid names:
    every ``+``-joined component must be a quality measure (``criteria``) and given once.
    ``validator/NAME`` and a bare validator name are the validation split's, and so is a bare ranking
    metric (``score``). A ``test/`` metric a test label went into (and ``score_per_minute``) is refused
    as such: choosing on it biases the test number."""
    columns = []
    for part in str(by).split(JOIN):
        name = part.strip()
        if name in RECORDED:
            name = f"{PREFIX}{name}"
        if name.startswith(PREFIX) or name in RANKING:
            name = f"val/{name}"
        if _is_test_metric(name):
            raise ConfigError(
                f"refusing to choose on {name!r}: it is a test-split metric. Choosing a configuration on "
                "the test split makes the test number a biased estimate of the choice (the report's own "
                "lesson); choose on a validation metric such as val/score and report test/ afterwards (the "
                f"label-free test/{PREFIX}NAME read no test label and are allowed)")
        if name not in criteria():
            shown = by if str(by).strip() else repr(by)
            where = f"--by {shown}" if JOIN not in str(by) else f"--by {shown}: {part.strip() or 'an empty part'}"
            what = "is not a quality measure to choose by" if name else "names nothing"
            raise ConfigError(f"{where} {what}; choose by {_valid_names()}")
        if name in columns:
            raise ConfigError(f"--by {by} names {name} twice: a rank average of a measure with itself only "
                              "weighs it double; give each measure once")
        columns.append(name)
    return columns


def _rankable(columns) -> list[str]:
    """What ``--by`` can name in a table of these (test-free) columns, validators also by their short names."""
    names = [c for c in criteria() if c in set(map(str, columns))]
    short = [n.removeprefix("val/") for n in names if n.startswith(f"val/{PREFIX}")]
    return names + short + [n.removeprefix(PREFIX) for n in short]


def _config_of(row: pd.Series) -> dict:
    """The full config of one run: its ``config.yaml`` when the run folder has one, else the row."""
    run_dir = row.get("run_dir")
    if isinstance(run_dir, str) and run_dir and (Path(run_dir) / "config.yaml").is_file():
        d = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    else:
        d = {}
        for k in FIELDS:
            if k in row.index:
                v = row[k]
                if isinstance(v, (tuple, np.ndarray)):
                    v = [float(x) for x in v]
                elif isinstance(v, np.generic):
                    v = v.item()
                d[k] = None if missing(v) else v
    d = {k: v for k, v in d.items() if k in FIELDS}
    return from_dict(d).to_dict()  # validated and complete (defaults for keys the table lacks)


def select(df: pd.DataFrame, patterns: list[str] | None) -> pd.DataFrame:
    """The runs of ``df`` whose experiment matches one of the glob ``patterns`` (all without any):
    one competition condition out of a study holding several, e.g. ``'xd-*-cartoon'``."""
    if not patterns:
        return df
    import fnmatch

    names = df["experiment"].astype(str) if "experiment" in df.columns else pd.Series("", index=df.index)
    kept = df[names.map(lambda n: any(fnmatch.fnmatchcase(n, p) for p in patterns))]
    if kept.empty:
        known = sorted(set(names))
        raise ConfigError(f"--select {' '.join(patterns)} matches no experiment of the results; they are: "
                          f"{', '.join(known[:12])}{', ...' if len(known) > 12 else ''}")
    return kept


def choose(df: pd.DataFrame, metric: str = "val/score", higher_is_better: bool | None = None,
           include_stopped: bool = False) -> dict:
    """The best configuration of a results table (``benchmark.results.store.load``) by the rule ``metric``
    (``--by``: a validation ranking metric, a validator, or a rank average of several; ``rule_columns``).

    Returns a dict: ``config`` (full config dict of the chosen configuration's best seed),
    ``experiment``, ``metric`` (the rule's columns joined by ``+``), ``rule`` (it in words, each
    column's direction), ``higher_is_better``, ``mean``, ``std``, ``ci95`` (None with one
    seed), ``n_seeds``, ``seeds``, ``run_ids``, ``run_dir`` (of the best seed), ``runner_up``
    (the same facts for the second-best configuration, or None), ``margin`` (best - runner-up
    mean, in the better direction, >= 0), ``separated`` (the two 95% intervals do not overlap;
    None when either has one seed), ``n_runs``, ``n_failed``, ``n_configurations`` and ``table``
    (every configuration ranked, as records), ``warnings`` (e.g. candidates validated on
    different data: different dataset, protocol, split or split_seed; also raised as UserWarning),
    ``n_stopped``: runs a sweep's early termination stopped (their metrics are those at the stop, so
    they are ranked only with ``include_stopped``).
    """
    columns = rule_columns(metric)  # quality measures only, test-label ones refused
    metric = JOIN.join(columns)
    if df.empty:
        raise ConfigError("the results hold no finished run: nothing to choose from")
    ranked = WITH_METRICS if include_stopped else ("ok",)
    if "status" in df.columns and not df["status"].isin(ranked).any():
        if df["status"].eq("stopped").any():
            raise ConfigError(f"every finished run was stopped early ({int(df['status'].eq('stopped').sum())} "
                              "stopped by the sweep's early termination): rank them with --include-stopped")
        raise ConfigError(f"every run failed ({len(df)} runs in the results): nothing to choose from; see the "
                          "errors with `benchmark results DIR` and rerun with `benchmark sweep --rerun-failed`")
    # structural guarantee: nothing below can read a number a test label went into
    df = df.drop(columns=[c for c in df.columns if _is_test_metric(str(c))])
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise ConfigError(f"metric {absent[0]!r} is not in the results; choose by one of: "
                          f"{', '.join(_rankable(df.columns)) or 'none'}, or several joined by {JOIN!r} (rank average)")
    directions = [_higher_is_better(c) if higher_is_better is None else higher_is_better for c in columns]
    higher = directions[0] if len(columns) == 1 else True  # a rank average: the mean percentile, 1 = best
    n_runs = len(df)
    ok = df["status"].isin(ranked) if "status" in df.columns else pd.Series(True, index=df.index)
    n_stopped = int(df["status"].eq("stopped").sum()) if "status" in df.columns else 0
    values = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in columns})
    present = values.notna().all(axis=1)
    flags = [f for f in dict.fromkeys(f"{c.split('/')[0]}/degenerate" for c in columns) if f in df.columns]
    flagged = pd.DataFrame({f: pd.to_numeric(df[f], errors="coerce").eq(1) for f in flags}, index=df.index)
    collapsed = ok & present & flagged.any(axis=1)  # collapsed or non-finite embeddings: a tie-break order
    keep = ok & present & ~collapsed
    if len(columns) == 1:
        value = values.loc[keep, metric]
    else:  # a rank average (module docstring)
        value = pd.concat([values.loc[keep, c].rank(pct=True, ascending=up) for c, up in zip(columns, directions)],
                          axis=1).mean(axis=1)
    usable = df[keep].assign(_value=value)
    unscored = df[ok & ~present]
    why = _why_missing(columns, unscored)
    if collapsed.any():
        why += f"; {int(collapsed.sum())} run(s) have degenerate embeddings ({' or '.join(flags)} = 1)"
    if usable.empty:
        raise ConfigError(f"cannot rank on {metric!r}: no successful run has it ({int(ok.sum())} ok, "
                          f"{int((~ok).sum())} failed); {why}")
    notes = []
    if collapsed.any():
        ids = ", ".join(map(str, df[collapsed].get("run_id", df[collapsed].index)))
        notes.append(f"{int(collapsed.sum())} successful run(s) left out, their embeddings are degenerate "
                     f"({' or '.join(flags)} = 1: {metric} is only the tie-break order): {ids}")
        warnings.warn(notes[-1], stacklevel=2)
    if len(unscored):
        ids = ", ".join(map(str, unscored.get("run_id", unscored.index)))
        notes.append(f"{len(unscored)} successful run(s) left out, {metric} could not be computed ({why}): {ids}")
        warnings.warn(notes[-1], stacklevel=2)

    groups = []
    for _, g in usable.groupby(row_key(usable), sort=False):
        g = g.sort_values("_value", ascending=not higher, kind="stable")
        vals = g["_value"].to_numpy(dtype=float)
        mean, half_width, n = t_ci(vals, 0.95)
        best_row = g.iloc[0]
        groups.append({
            "experiment": best_row.get("experiment"),
            "mean": mean,
            "std": float(vals.std(ddof=1)) if n > 1 else None,
            "ci95": None if missing(half_width) else half_width,
            "n_seeds": n,
            "seeds": [norm(s) for s in g["seed"]] if "seed" in g.columns else [],
            "run_ids": [str(r) for r in g["run_id"]] if "run_id" in g.columns else [],
            "run_dir": best_row.get("run_dir") if "run_dir" in g.columns else None,
            "_row": best_row,
        })
    sign = -1.0 if higher else 1.0
    groups.sort(key=lambda g: (sign * g["mean"], -g["n_seeds"], str(g["experiment"]), g["run_ids"]))
    for g in groups:
        g["config"] = _config_of(g.pop("_row"))

    def facts(g):
        return {k: g[k] for k in ("experiment", "mean", "std", "ci95", "n_seeds", "seeds", "run_ids",
                                  "run_dir", "config")}

    differing = [k for k in EVALUATION_DATA if len({repr(g["config"].get(k)) for g in groups}) > 1]
    if differing:
        notes.append(f"configurations differ in {', '.join(differing)}: their {metric} values come from "
                     "different validation sets and are not strictly comparable")
        warnings.warn(notes[-1], stacklevel=2)

    best = groups[0]
    runner = groups[1] if len(groups) > 1 else None
    margin = separated = None
    if runner is not None:
        margin = abs(best["mean"] - runner["mean"])
        if best["ci95"] is not None and runner["ci95"] is not None:
            separated = bool(margin > best["ci95"] + runner["ci95"])
    return {
        **facts(best), "metric": metric, "rule": _rule(columns, directions), "higher_is_better": higher,
        "runner_up": facts(runner) if runner else None, "margin": margin, "separated": separated,
        "n_runs": n_runs, "n_failed": int((~df["status"].isin(WITH_METRICS)).sum()) if "status" in df.columns else 0,
        "n_stopped": n_stopped, "include_stopped": include_stopped, "n_configurations": len(groups), "warnings": notes,
        "table": [{k: v for k, v in facts(g).items() if k != "config"} for g in groups],
    }


def _why_missing(columns: list[str], unscored: pd.DataFrame) -> str:
    """Why runs lack a rule's column: a split without scorable queries, a validator that is only recorded
    for query -> gallery splits, or plainly missing."""
    reasons = []
    for c in columns:
        split = c.split("/")[0]
        n_queries = f"{split}/n_queries"
        if c.startswith(f"{split}/{PREFIX}"):
            reasons.append(f"{c} is recorded for query -> gallery splits only (null on a same-domain split or where "
                           "it cannot be computed: the runs' warnings say why)")
        elif n_queries in unscored.columns and pd.to_numeric(unscored[n_queries], errors="coerce").eq(0).any():
            reasons.append("validation has no scorable queries: raise the validation fraction (split) or "
                           "min_faces_per_person")
    return "; ".join(dict.fromkeys(reasons)) or "it is missing"


def _rule(columns: list[str], directions: list[bool]) -> str:
    """The rule in words, for best.yaml and the summary."""
    said = [f"{c} ({'higher' if up else 'lower'} is better)" for c, up in zip(columns, directions)]
    if len(columns) == 1:
        return said[0]
    return (f"rank average of {', '.join(said)}: each run's percentile rank per component among the ranked runs "
            "(1 = best), averaged; higher is better")


def _config_diff(a: dict, b: dict) -> dict:
    """Keys whose values differ, shown as a reader should see them: "no head" for the training keys
    of a frozen-feature config (and two frozen configs do not differ in an lr they never use)."""
    return {k: [head_value(a, k), head_value(b, k)] for k in a
            if k not in RUN_SPECIFIC and a.get(k) != b.get(k) and head_value(a, k) != head_value(b, k)}


def format_choice(choice: dict) -> str:
    """Human summary of a ``choose`` result (for the CLI)."""
    def stat(g):
        ci = f" ± {g['ci95']:.4g} (95% CI)" if g["ci95"] is not None else " (1 seed, no CI)"
        return f"{g['mean']:.4g}{ci}, n_seeds={g['n_seeds']}"

    r = choice["runner_up"]
    diff = _config_diff(choice["config"], r["config"]) if r is not None else {}

    def name(g, side: int) -> str:
        """The experiment, and what tells it from the other when both share that name (a search's runs)."""
        if r is None or r["experiment"] != choice["experiment"] or not diff:
            return g["experiment"]
        return f"{g['experiment']} ({', '.join(f'{k}={v[side]}' for k, v in list(diff.items())[:4])})"

    lines = [f"chosen by {choice['metric']} ({'higher' if choice['higher_is_better'] else 'lower'} is better; "
             f"{choice['n_configurations']} configurations, {choice['n_runs']} runs, "
             f"{choice['n_failed']} failed ignored; " + _stopped_note(choice) + "no test label read)",
             *([f"  rule:      {choice['rule']}"] if JOIN in choice["metric"] else []),
             f"  best:      {name(choice, 0)}: {stat(choice)}"]
    if r is not None:
        lines.append(f"  runner-up: {name(r, 1)}: {stat(r)}")
        note = {True: "intervals do not overlap", False: "within noise: the 95% intervals overlap",
                None: "no CI (single seeds): rerun with more seeds to know if it is noise"}[choice["separated"]]
        lines.append(f"  margin:    {choice['margin']:.4g} ({note})")
        if diff:
            lines.append("  differs:   " + ", ".join(f"{k}: {v[0]} vs {v[1]}" for k, v in diff.items()))
    lines += [f"  warning:   {w}" for w in choice.get("warnings", [])]
    return "\n".join(lines)


def _stopped_note(choice: dict) -> str:
    n = choice.get("n_stopped", 0)
    if not n:
        return ""
    return f"{n} stopped early {'ranked with the others' if choice.get('include_stopped') else 'not ranked (--include-stopped ranks them)'}; "


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if missing(x):
        return None
    return x


def write_best(choice: dict, path: Path | str = "best.yaml") -> Path:
    """Write the chosen config as ``path``: loadable by ``benchmark.config.load_yaml``.

    The selection facts are YAML comments: readable lines, plus one ``# selection-json:`` line
    that ``read_selection`` parses.
    """
    path = Path(path)
    cfg: Config = from_dict(choice["config"])
    selection = _jsonable({k: v for k, v in choice.items() if k not in ("config", "table")})
    if selection.get("runner_up"):
        selection["runner_up"] = {k: v for k, v in selection["runner_up"].items() if k != "config"}
        selection["runner_up_differs"] = _config_diff(choice["config"], choice["runner_up"]["config"])
    header = ["# best.yaml: the configuration chosen by `benchmark choose` (validation only).",
              *("# " + line for line in format_choice(choice).splitlines()),
              _SELECTION_TAG + json.dumps(selection, sort_keys=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(header) + "\n" + dump_yaml(cfg))  # never half a best.yaml
    return path


def read_selection(path: Path | str) -> dict | None:
    """The selection facts written by ``write_best`` (None for a plain config file)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(_SELECTION_TAG):
            return json.loads(line[len(_SELECTION_TAG):])
    return None


def load_best(path: Path | str) -> Config:
    """``best.yaml`` as a Config (the same as ``benchmark.config.load_yaml``: comments are ignored)."""
    from benchmark.config import load_yaml

    return load_yaml(path)
