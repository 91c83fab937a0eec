"""The results store: a folder of run records (``<dir>/<run_id>/``) read as one DataFrame.

One row per run (columns: ``benchmark.results.schema``): ``run_id``, ``status`` (ok | stopped |
failed | damaged), ``error``, every config key (bare names: ``backbone``, ``lr``, ``seed`` ...) and every
metric (slash names: ``val/score``, ``test/top1``, ``time/cost_s`` ...). Runs pulled from a W&B
sweep are converted to the same shape (``from_wandb_runs``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.config import ConfigError
from benchmark.results import schema
from benchmark.results.record import RunRecord


def load(directory: Path | str) -> pd.DataFrame:
    """Every finished record of ``directory`` as a row (``RunRecord.check``); one that is not whole and
    consistent is a ``damaged`` row."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file, not a folder" if directory.exists() else "does not exist"
        raise ConfigError(f"results folder {directory} {what}; give the --out folder of a `benchmark run` or "
                          "`benchmark sweep`")
    if RunRecord(directory).is_complete():  # one record, not a folder of them: it "held no finished run"
        raise ConfigError(f"results folder {directory} is one run's record; give the folder that holds the records, "
                          f"{directory.parent}")
    return pd.DataFrame([read_record(run_dir) for run_dir in sorted(directory.iterdir())
                         if run_dir.is_dir() and not run_dir.name.startswith(".") and RunRecord(run_dir).is_complete()])


def read_record(run_dir: Path) -> dict:
    """One finished run record as a flat row (status, config keys, metrics); see ``RunRecord.row``."""
    return RunRecord(run_dir).row()


def from_wandb_runs(runs: list[dict], history_dir: Path | str | None = None) -> pd.DataFrame:
    """W&B runs (``{"name", "id", "state", "config", "summary"}``, optionally ``"history"``: the logged
    rows) -> the store's DataFrame.

    Runs still ``running``/``pending`` are not results yet: they are left out and named in
    ``df.attrs["in_progress"]``. Per-epoch values the summary keeps from the last epoch
    (``train/*``, ``val/loss``) are not result columns. With ``history_dir``, each run's per-epoch
    history is written as ``<history_dir>/<run_id>/history.csv`` (the run folder's format) and that
    folder becomes its ``run_dir``, so the report draws Figure 2's curves as from local records.
    A pure function, so the conversion is tested without network; ``benchmark report --from-wandb``
    feeds it from ``wandb.Api().sweep(...).runs``.
    """
    rows, in_progress = [], []
    for r in runs:
        if r.get("state") in ("running", "pending"):
            in_progress.append(f"{r.get('name')} ({r['state']})")
            continue
        cfg = {k: v for k, v in (r.get("config") or {}).items() if not k.startswith("_")}
        summary = {k: v for k, v in (r.get("summary") or {}).items()
                   if not k.startswith("_") and isinstance(v, (int, float, str, bool)) and v is not None
                   and not k.startswith("train/") and k != "val/loss"}
        ok = r.get("state") == "finished" and "test/score" in summary
        run_id = cfg.get("run_id", r.get("name"))
        epochs = [{"epoch": h.get("epoch", h.get("_step")),
                   **{k: v for k, v in h.items() if not k.startswith("_") and isinstance(v, (int, float))}}
                  for h in r.get("history") or [] if "train/loss" in h]
        run_dir = None
        if history_dir is not None and epochs:
            run_dir = Path(history_dir) / str(run_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(epochs).to_csv(run_dir / "history.csv", index=False)
        rows.append({"run_id": run_id, "status": "ok" if ok else "failed",
                     "error": None if ok else summary.get("error", f"W&B state {r.get('state')}"),
                     "run_dir": None if run_dir is None else str(run_dir), **schema.flat_config(cfg),
                     **{k: v for k, v in summary.items() if "/" in k or k in ("score_per_minute", "best_epoch")}})
    df = pd.DataFrame(rows)
    df.attrs["in_progress"] = in_progress
    return df


def fetch_wandb(path: str, history_dir: Path | str | None = None) -> pd.DataFrame:
    """Runs of ``ENTITY/PROJECT/SWEEP_ID`` through W&B's public API, with their per-epoch history."""
    try:
        import wandb
    except ModuleNotFoundError:
        raise ConfigError("--from-wandb needs wandb, which is not installed in this environment: "
                          "pip install wandb") from None
    runs = []
    for r in wandb.Api().sweep(path).runs:
        done = r.state not in ("running", "pending")
        runs.append({"name": r.name, "id": r.id, "state": r.state, "config": dict(r.config),
                     "summary": dict(r.summary), "history": list(r.scan_history()) if done else []})
    return from_wandb_runs(runs, history_dir)


#: the formats ``export`` writes, by file suffix
EXPORTS = (".csv", ".parquet")


def export_target(path: Path | str) -> Path:
    """``path`` if a table can be exported there (checked before any work): another suffix (``.xlsx``
    got CSV text), a folder or a folder that cannot be written is one ConfigError naming it."""
    from benchmark.files import check_writable

    path = Path(path)
    if path.suffix.lower() not in EXPORTS:
        raise ConfigError(f"--export {path}: write *.csv or *.parquet (the suffix decides the format)")
    if path.is_dir():
        raise ConfigError(f"--export {path} is a folder; give a file, e.g. {path / 'results.csv'}")
    check_writable(path.parent, "folder of --export")
    return path


def export(df: pd.DataFrame, path: Path | str) -> Path:
    """CSV or Parquet, by the file suffix (``export_target``), written atomically."""
    from benchmark.files import write_atomic

    path = export_target(path)
    if path.suffix.lower() == ".parquet":
        import io

        buf = io.BytesIO()
        df.assign(**{c: df[c].astype(str) for c in df.columns if df[c].map(type).eq(tuple).any()}) \
          .to_parquet(buf, index=False)
        return write_atomic(path, buf.getvalue())
    return write_atomic(path, df.to_csv(index=False))
