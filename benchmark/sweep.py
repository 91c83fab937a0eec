"""The sweep: one ``sweep.yaml`` for ``wandb sweep`` + ``wandb agent`` and for our offline runner.

The offline runner expands the file exactly as W&B's grid does (the cartesian product of every
parameter's ``values``/``value``), runs each point through ``benchmark.run.run`` and records it.
It is resumable (a run with a finished record is skipped), contains failures (a failing run is
recorded as failed and the sweep goes on) and lets several processes share one output folder: a
run is claimed with an exclusive lock on ``<out>/.claims/<run_id>.lock`` before it starts; the
operating system releases the lock even when a runner is killed with ``kill -9``. ``--rerun`` sweeps
running at the same time share one rerun (``_rerun_generation``): a run one of them redid is not
redone by another. A record whose config differs from what would run now (an edited experiment) is
rerun, never skipped as recorded (``config_change``).
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from benchmark.catalog import find_sweep
from benchmark.config import FIELDS, RUN_INDEPENDENT_KEYS, Config, ConfigError, read_yaml, resolve
from benchmark.files import _alive, check_writable, clean_stale, locked, write_atomic
from benchmark.results.record import RecordError, RunRecord
from benchmark.results.schema import norm
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
    sweep = load(sweep_path)
    out_dir = Path(out or Path("results") / sweep["name"])
    planned = plan(sweep, overrides, select, seeds)
    check_writable(out_dir, "output folder (--out)")  # before any run, not after the first one trained
    clean_stale(out_dir)
    (out_dir / ".claims").mkdir(exist_ok=True)
    with _rerun_generation(out_dir) if rerun else nullcontext() as since:
        return pd.DataFrame(_run_planned(planned, sweep["name"], out_dir, since, rerun_failed))


def _run_planned(planned: list[Planned], name: str, out_dir: Path, since: float | None,
                 rerun_failed: bool) -> list[dict]:
    from benchmark.run import run  # torch: not for `benchmark list sweeps`

    rows = []
    bar = tqdm(planned, desc=f"sweep {name}", unit="run")
    for p in bar:
        bar.set_postfix_str(p.run_id)
        run_dir = out_dir / p.run_id
        row = {"run_id": p.run_id, "experiment": p.experiment}
        if _done(run_dir, p.cfg, since, rerun_failed):
            rows.append({**row, "action": "skipped (recorded)", **_summary(run_dir)})
            continue
        # an exclusive, non-blocking claim on the run; released by the OS if this runner dies
        with locked(out_dir / ".claims" / f"{p.run_id}.lock", blocking=False) as claimed:
            if not claimed:
                rows.append({**row, "action": "skipped (running elsewhere)", "status": "running"})
                continue
            if _done(run_dir, p.cfg, since, rerun_failed):  # finished by another runner meanwhile
                rows.append({**row, "action": "skipped (recorded)", **_summary(run_dir)})
                continue
            changed = config_change(run_dir, p.cfg)
            if changed:
                tqdm.write(f"{p.run_id}: the recorded config differs from the experiment's now ({changed}): rerun",
                           file=sys.stderr)
            run(p.cfg, out_dir, p.run_id, group=name, raise_errors=False)
            rows.append({**row, "action": f"rerun (config changed: {changed})" if changed else "ran",
                         **_summary(run_dir)})
    return rows


def config_change(run_dir: Path, cfg: Config) -> str | None:
    """What differs between the config recorded in ``run_dir`` and ``cfg`` (what would run now:
    e.g. an experiment whose ``lr`` was edited in its YAML), as ``key recorded -> now``; None when
    they agree or nothing readable is recorded. Keys that cannot change a result are ignored."""
    from benchmark.models.backbones import adapt

    try:
        recorded = RunRecord(run_dir).config()
    except RecordError:
        return None
    nows = [cfg.to_dict(), adapt(cfg).to_dict()]  # an ok record holds the size the backbone required
    diffs = [[k for k in now if k not in RUN_INDEPENDENT_KEYS and norm(recorded.get(k)) != norm(now[k])]
             for now in nows]
    keys = min(diffs, key=len)
    if not keys:
        return None
    now = nows[diffs.index(keys)]
    return ", ".join(f"{k} {recorded.get(k)!r} -> {now[k]!r}" for k in keys)


@contextmanager
def _rerun_generation(out_dir: Path):
    """Yield when the ``--rerun`` this process takes part in began: runs recorded since then are done.

    Concurrent ``--rerun`` sweeps on one folder share it (``.claims/rerun.json``: its start and the
    pids of the sweeps in it), so that a rerun claims like a first run: a run one of them redid is not
    redone by the other. A rerun started when none of them is running any more begins a new one."""
    marker, lock = out_dir / ".claims" / "rerun.json", out_dir / ".claims" / "rerun.lock"

    def read() -> dict | None:
        try:
            doc = json.loads(marker.read_text())
            return {"since": float(doc["since"]), "pids": [p for p in doc["pids"] if _alive(int(p))]}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    with locked(lock):
        doc = read()
        doc = {**doc, "pids": [*doc["pids"], os.getpid()]} if doc and doc["pids"] else \
            {"since": time.time(), "pids": [os.getpid()]}
        write_atomic(marker, json.dumps(doc))
    try:
        yield doc["since"]
    finally:
        with locked(lock):
            now = read()
            if now is not None:
                write_atomic(marker, json.dumps({**now, "pids": [p for p in now["pids"] if p != os.getpid()]}))


def _done(run_dir: Path, cfg: Config, rerun_since: float | None, rerun_failed: bool) -> bool:
    """Recorded and not to be run again: a damaged record (a file unreadable) and one recorded with
    another config than ``cfg`` (an edited experiment) are always rerun; under ``--rerun``
    (``rerun_since``) only records started since the rerun began count."""
    if not RunRecord(run_dir).is_complete():
        return False
    if rerun_since is not None:
        try:
            return RunRecord(run_dir).status().get("started", 0) >= rerun_since
        except RecordError:
            return False
    status = read_record(run_dir)["status"]
    done = status == "ok" or (status == "failed" and not rerun_failed)
    return done and config_change(run_dir, cfg) is None


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

