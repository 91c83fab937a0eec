"""The sweep: one ``sweep.yaml`` for ``wandb sweep`` + ``wandb agent`` and for our offline runner.

The offline runner expands the file exactly as W&B's grid does (the cartesian product of every
parameter's ``values``/``value``), runs each point through ``benchmark.run.run`` and records it.
It is resumable (a run with a finished record is skipped), contains failures (a failing run is
recorded as failed and the sweep goes on) and lets several processes share one output folder: a
run is claimed with an exclusive lock on ``<out>/.claims/<run_id>.lock`` before it starts; the
operating system releases the lock even when a runner is killed with ``kill -9``.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import sys
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from benchmark.catalog import find_sweep
from benchmark.config import FIELDS, Config, ConfigError, read_yaml, resolve
from benchmark.files import check_writable, clean_stale, locked
from benchmark.results.record import RunRecord
from benchmark.results.store import read_record


def load(path: Path | str) -> dict:
    """A sweep file (a path, or a named sweep of ``benchmark list sweeps``), validated."""
    path = find_sweep(path)
    doc = read_yaml(path, "sweep file")
    if doc.get("method") != "grid":
        raise ConfigError(f"{path}: method must be 'grid' (got {doc.get('method')!r}); the offline runner "
                          "runs every point of the grid")
    params = doc.get("parameters") or {}
    if "experiment" not in params:
        raise ConfigError(f"{path}: parameters must include 'experiment' (names from experiments/*.yaml)")
    for name, spec in params.items():
        if name != "experiment" and name not in FIELDS:
            raise ConfigError(f"{path}: parameter {name!r} is not a config key; valid: {', '.join(FIELDS)}")
        if not isinstance(spec, dict) or not ("values" in spec or "value" in spec):
            raise ConfigError(f"{path}: parameter {name!r} needs 'values: [...]' or 'value: x' for a grid")
    doc.setdefault("name", path.stem)
    return doc


def expand(sweep: dict) -> list[dict]:
    """Every grid point, as W&B's grid enumerates them: a cartesian product over the parameters."""
    params = sweep["parameters"]
    names = list(params)
    axes = [params[n]["values"] if "values" in params[n] else [params[n]["value"]] for n in names]
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


@dataclass
class Planned:
    run_id: str
    experiment: str
    overrides: dict
    cfg: Config


def plan(sweep: dict, overrides: dict | None = None, select: list[str] | None = None,
         seeds: int | None = None) -> list[Planned]:
    """The runs of ``sweep``: grid points (x ``seeds``), filtered by ``select`` name patterns."""
    from benchmark.models.backbones import check_backbone  # (torch: not for `benchmark list sweeps`)
    from benchmark.run import run_id_for

    points = expand(sweep)
    if seeds:
        if "seed" in sweep["parameters"]:
            raise ConfigError("--seeds conflicts with the sweep's own 'seed' parameter; use one of them")
        points = [{**p, "seed": s} for p in points for s in range(seeds)]
    out, seen = [], set()
    for point in points:
        experiment = point.pop("experiment")
        if select and not any(fnmatch.fnmatchcase(experiment, pat) for pat in select):
            continue
        ov = {**point, **(overrides or {})}
        cfg = resolve(experiment, ov)  # validates every run before any starts
        check_backbone(cfg.backbone)
        rid = run_id_for(cfg, ov)
        if rid in seen:
            raise ConfigError(f"two grid points resolve to the same run {rid}")
        seen.add(rid)
        out.append(Planned(rid, experiment, ov, cfg))
    if select and not out:
        raise ConfigError(f"--select {' '.join(select)} matches no experiment of the sweep")
    return out


def run_sweep(sweep_path: Path | str, out: Path | str | None = None, overrides: dict | None = None,
              select: list[str] | None = None, seeds: int | None = None, rerun: bool = False,
              rerun_failed: bool = False) -> pd.DataFrame:
    """Run every planned run not yet recorded; returns one row per planned run (this process's view)."""
    from benchmark.run import run

    sweep = load(sweep_path)
    out_dir = Path(out or Path("results") / sweep["name"])
    planned = plan(sweep, overrides, select, seeds)
    check_writable(out_dir, "output folder (--out)")  # before any run, not after the first one trained
    clean_stale(out_dir)
    (out_dir / ".claims").mkdir(exist_ok=True)
    rows = []
    bar = tqdm(planned, desc=f"sweep {sweep['name']}", unit="run")
    for p in bar:
        bar.set_postfix_str(p.run_id)
        run_dir = out_dir / p.run_id
        row = {"run_id": p.run_id, "experiment": p.experiment}
        if _done(run_dir, rerun, rerun_failed):
            rows.append({**row, "action": "skipped (recorded)", **_summary(run_dir)})
            continue
        # an exclusive, non-blocking claim on the run; released by the OS if this runner dies
        with locked(out_dir / ".claims" / f"{p.run_id}.lock", blocking=False) as claimed:
            if not claimed:
                rows.append({**row, "action": "skipped (running elsewhere)", "status": "running"})
                continue
            if _done(run_dir, rerun, rerun_failed):  # finished by another runner meanwhile
                rows.append({**row, "action": "skipped (recorded)", **_summary(run_dir)})
                continue
            run(p.cfg, out_dir, p.run_id, group=sweep["name"], raise_errors=False)
            rows.append({**row, "action": "ran", **_summary(run_dir)})
    return pd.DataFrame(rows)


def _done(run_dir: Path, rerun: bool, rerun_failed: bool) -> bool:
    """Recorded and not to be run again: a damaged record (a file unreadable) is always rerun."""
    if rerun or not RunRecord(run_dir).is_complete():
        return False
    status = read_record(run_dir)["status"]
    return status == "ok" or (status == "failed" and not rerun_failed)


def _summary(run_dir: Path) -> dict:
    row = read_record(run_dir)
    return {k: row.get(k) for k in ("status", "error", "val/score", "test/score", "test/top1", "time/total_s")}


def params_from_wandb(experiment: str | None, overrides: dict, out: str,
                      group: str | None = None) -> tuple[str, dict]:
    """Under ``wandb agent``: start the run now (in the sweep's group: ``group``, else the sweep id)
    and take its parameters from ``wandb.config``."""
    try:
        import wandb
    except ModuleNotFoundError:
        raise ConfigError(f"started by `wandb agent` (WANDB_SWEEP_ID is set) but wandb is not installed for "
                          f"{sys.executable}: pip install wandb, or run the agent inside the project's "
                          "environment") from None
    Path(out).mkdir(parents=True, exist_ok=True)
    run_ = wandb.run or wandb.init(dir=out, job_type="benchmark-run",
                                   group=group or os.environ.get("WANDB_SWEEP_ID"))
    params = {k: v for k, v in dict(run_.config).items() if k in FIELDS or k == "experiment"}
    return params.pop("experiment", experiment), {**params, **overrides}


def environment_note() -> str | None:
    """One line when this interpreter is probably not the project's environment: ``wandb agent``
    runs ``${interpreter}``, i.e. whatever ``python`` is first on PATH."""
    import benchmark

    try:
        metadata.distribution("retrieval-benchmark")
    except metadata.PackageNotFoundError:
        return (f"note: {sys.executable} has no retrieval-benchmark installed; benchmark was imported from "
                f"{Path(benchmark.__file__).parent} with this interpreter's packages. Start `wandb agent` "
                "inside the project's environment (source .venv/bin/activate).")
    venv = Path(benchmark.__file__).resolve().parents[1] / ".venv"
    if venv.is_dir() and Path(sys.prefix).resolve() != venv.resolve():
        return (f"note: running with {sys.executable}, not this checkout's environment {venv}; start "
                f"`wandb agent` after `source {venv}/bin/activate`.")
    return None


def format_summary(df: pd.DataFrame) -> str:
    if df.empty:
        return "no runs"
    cols = [c for c in ("run_id", "action", "status", "val/score", "test/score", "test/top1", "time/total_s",
                        "error") if c in df]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}", max_colwidth=60)


def exit_code(df: pd.DataFrame) -> int:
    return int("status" in df and (df["status"] == "failed").any())

