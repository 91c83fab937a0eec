"""A results DataFrame (``benchmark.results.store.load``) made ready for the report: failed runs and
runs stopped early set aside, seeds aggregated into configurations, and one protocol/data setting chosen for the
comparisons (test numbers of different test sets are not comparable)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from benchmark.config import legacy
from benchmark.results.schema import DEFAULTS, SETTING_KEYS, missing, norm, row_key
from benchmark.results.stats import aggregate


@dataclass
class ReportData:
    runs: pd.DataFrame          #: successful runs (every setting), with their ``config`` id
    failed: pd.DataFrame        #: failed runs (and successful ones without a test score), with ``error``
    configs_all: pd.DataFrame   #: configurations of every setting
    configs: pd.DataFrame       #: configurations of the chosen setting: what Tables 1-2, Figures 1-6 use
    setting: dict               #: the chosen setting (protocol, dataset, ...)
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95
    #: runs a sweep's early termination stopped: their metrics are those at the stop, so they are
    #: counted and shown in the search section but kept out of every statistic
    stopped: pd.DataFrame = field(default_factory=pd.DataFrame)


def _fill_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """A config key the frame lacks (or a run lacks) reads as its default (W&B, hand-made frames)."""
    df = df.copy()
    for k in ("protocol", "dataset", "lr", "epochs", "batch_size", "augment", "normalize", "embedding", "backbone"):
        if k not in df.columns:
            df[k] = DEFAULTS[k]
        elif DEFAULTS[k] is not None:
            df[k] = df[k].map(lambda v, d=DEFAULTS[k]: d if missing(v) else v)
    for k in ("lr",):
        df[k] = pd.to_numeric(df[k], errors="coerce")
    for k in ("epochs", "batch_size"):
        df[k] = pd.to_numeric(df[k], errors="coerce")
    for k in ("augment", "normalize"):
        df[k] = df[k].map(lambda v, k=k: legacy(k, norm(v)))  # old records: augment true/false
    return df


def prepare(df: pd.DataFrame, protocol: str | None = None, confidence: float = 0.95) -> ReportData:
    """Split ``df`` into failed and successful runs, aggregate seeds, pick the setting to report.

    ``protocol``: the protocol the comparisons use; default closed-set when present (the report's),
    else the most common. Within it, the data setting (dataset, split ...) with most configurations.
    """
    notes: list[str] = []
    df = df.reset_index(drop=True)
    if "status" not in df.columns:
        df = df.assign(status="ok")
    if "error" not in df.columns:
        df = df.assign(error=None)
    df = _fill_defaults(df) if len(df) else df
    score = pd.to_numeric(df["test/score"], errors="coerce") if "test/score" in df.columns \
        else pd.Series(float("nan"), index=df.index)
    ok = df["status"].eq("ok") & score.notna()
    no_score = df["status"].eq("ok") & score.isna()
    df.loc[no_score, "error"] = "status ok but no test/score in its metrics"
    stopped = df["status"].eq("stopped")
    failed = df[~ok & ~stopped].copy()
    runs = df[ok].copy()
    configs_all = aggregate(runs, confidence)
    setting: dict = {}
    configs = configs_all
    if len(configs_all):
        protos = configs_all["protocol"].map(str)
        if protocol is None:
            protocol = "closed-set" if (protos == "closed-set").any() else protos.value_counts().index[0]
        elif not (protos == protocol).any():
            notes.append(f"no successful run uses protocol {protocol}; using {protos.value_counts().index[0]}")
            protocol = protos.value_counts().index[0]
        configs = configs_all[protos == protocol]
        skeys = [k for k in SETTING_KEYS if k in configs.columns and k != "protocol"]
        sk = row_key(configs, skeys)
        top = sk.value_counts().index[0]
        setting = {"protocol": protocol, **dict(zip(skeys, json.loads(top)))}
        others = int((sk != top).sum())
        if others:
            notes.append(f"{others} {protocol} configuration(s) use another data setting (dataset/split) and are "
                         "left out of the comparisons")
        configs = configs[sk == top]
        n_other = int((protos != protocol).sum())
        if n_other:
            others_p = ", ".join(sorted(set(protos) - {protocol}))
            notes.append(f"{n_other} configuration(s) of other protocols ({others_p}) "
                         "appear only in the protocol audit")
        configs = configs.reset_index(drop=True)
    by_run = {rid: c for ids, c in zip(configs_all.get("run_ids", []), configs_all.get("config", [])) for rid in ids}
    runs["config"] = runs["run_id"].map(lambda r: by_run.get(str(r))) if "run_id" in runs else None
    return ReportData(runs, failed, configs_all, configs, setting, notes, confidence, df[stopped].copy())
