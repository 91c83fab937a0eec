"""The results store: a folder of run records (``<dir>/<run_id>/``) read as one DataFrame.

One row per run: ``run_id``, ``status`` (ok | failed), ``error``, every config key (bare names:
``backbone``, ``lr``, ``seed`` ...) and every metric (slash names: ``val/score``, ``test/top1``,
``time/cost_s`` ...). Runs pulled from a W&B sweep are converted to the same shape (``from_wandb_runs``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from benchmark import record
from benchmark.config import legacy


def load(directory: Path | str) -> pd.DataFrame:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"results folder {directory} does not exist")
    return pd.DataFrame([read_record(run_dir) for run_dir in sorted(directory.iterdir())
                         if run_dir.is_dir() and not run_dir.name.startswith(".") and record.is_complete(run_dir)])


def read_record(run_dir: Path) -> dict:
    """One finished run record as a flat row (status, config keys, metrics)."""
    st = record.status(run_dir)
    row = {"run_id": run_dir.name, "status": st["status"], "error": st.get("error"), "run_dir": str(run_dir)}
    cfg_file = run_dir / "config.yaml"
    if cfg_file.exists():
        row |= _flat_config(yaml.safe_load(cfg_file.read_text()))
    if (run_dir / record.METRICS).exists():
        row |= json.loads((run_dir / record.METRICS).read_text())
    return row


def _flat_config(cfg: dict) -> dict:
    """Hashable cells: lists -> tuples, mappings (``loss_args``) -> sorted JSON; old spellings
    (``augment: true``) -> today's."""
    def cell(k, v):
        if isinstance(v, list):
            return tuple(v)
        return json.dumps(v, sort_keys=True) if isinstance(v, dict) else legacy(k, v)

    return {k: cell(k, v) for k, v in cfg.items()}


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
