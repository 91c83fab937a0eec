"""The results store: a folder of run records (``<dir>/<run_id>/``) read as one DataFrame.

One row per run (columns: ``benchmark.results.schema``): ``run_id``, ``status`` (ok | failed |
damaged), ``error``, every config key (bare names: ``backbone``, ``lr``, ``seed`` ...) and every
metric (slash names: ``val/score``, ``test/top1``, ``time/cost_s`` ...). Runs pulled from a W&B
sweep are converted to the same shape (``from_wandb_runs``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.config import ConfigError
from benchmark.results.record import RunRecord


def load(directory: Path | str) -> pd.DataFrame:
    """Every finished record of ``directory`` as a row; an unreadable one is a ``damaged`` row."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file, not a folder" if directory.exists() else "does not exist"
        raise ConfigError(f"results folder {directory} {what}; give the --out folder of a `benchmark run` or "
                          "`benchmark sweep`")
    return pd.DataFrame([read_record(run_dir) for run_dir in sorted(directory.iterdir())
                         if run_dir.is_dir() and not run_dir.name.startswith(".") and RunRecord(run_dir).is_complete()])


def read_record(run_dir: Path) -> dict:
    """One finished run record as a flat row (status, config keys, metrics); see ``RunRecord.row``."""
    return RunRecord(run_dir).row()


def _flat_config(cfg: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}


def from_wandb_runs(runs: list[dict]) -> pd.DataFrame:
    """W&B runs (``{"name", "id", "state", "config", "summary"}``) -> the store's DataFrame.

    A pure function, so the conversion is tested without network; ``benchmark report --from-wandb``
    feeds it from ``wandb.Api().sweep(...).runs``.
    """
    rows = []
    for r in runs:
        cfg = {k: v for k, v in (r.get("config") or {}).items() if not k.startswith("_")}
        summary = {k: v for k, v in (r.get("summary") or {}).items()
                   if not k.startswith("_") and isinstance(v, (int, float, str, bool)) and v is not None}
        ok = r.get("state") == "finished" and "test/score" in summary
        rows.append({"run_id": cfg.get("run_id", r.get("name")), "status": "ok" if ok else "failed",
                     "error": None if ok else summary.get("error", f"W&B state {r.get('state')}"),
                     "run_dir": None, **_flat_config(cfg),
                     **{k: v for k, v in summary.items() if "/" in k or k in ("score_per_minute", "best_epoch")}})
    return pd.DataFrame(rows)


def fetch_wandb(path: str) -> pd.DataFrame:
    """Runs of ``ENTITY/PROJECT/SWEEP_ID`` through W&B's public API."""
    import wandb

    sweep = wandb.Api().sweep(path)
    return from_wandb_runs([{"name": r.name, "id": r.id, "state": r.state, "config": dict(r.config),
                             "summary": dict(r.summary)} for r in sweep.runs])


def export(df: pd.DataFrame, path: Path | str) -> Path:
    """CSV or Parquet, by the file suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        df.assign(**{c: df[c].astype(str) for c in df.columns if df[c].map(type).eq(tuple).any()}) \
          .to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path
