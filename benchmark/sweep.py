"""The sweep: one ``sweep.yaml`` for ``wandb sweep`` + ``wandb agent`` and for our offline runner.

Offline, every W&B method runs through W&B's own engine (PyPI ``sweeps``, what W&B's server runs):
``grid`` plans the cartesian product of the parameters exactly as before (same runs, order and run
ids); ``random`` and ``bayes`` ask ``sweeps.next_run`` for the next configuration given the runs so
far, seeded by ``--search-seed`` and the number of runs, so a search is reproducible; an
``early_terminate: {type: hyperband}`` asks ``sweeps.stop_runs`` between epochs, from every run's
per-epoch history of ``metric.name``, whether to stop the run in progress (recorded as ``stopped``).
``run_cap``, ``metric.target`` and ``--budget MINUTES`` end a sweep.

The proposer's state is the results folder: the records (each one's ``config.yaml``, metrics and
``history.csv``) plus the claims of runs in progress, so a search resumes after ``kill -9`` without
repeating or losing a run. Several processes share one output folder: a run is claimed with an
exclusive lock on ``<out>/.claims/<run_id>.lock`` before it starts (the operating system releases it
even when its runner is killed); its parameters and per-epoch history so far are in
``<out>/.claims/<run_id>.json`` for the other runners' proposals and Hyperband; proposals are made
under one folder-wide lock, so two runners never propose or run the same configuration twice.
``--rerun`` sweeps running at the same time share one rerun (``_rerun_generation``): a run one of
them redid is not redone by another. A record whose config differs from what would run now (an
edited experiment) is rerun, never skipped as recorded (``config_change``). A failing run is
recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from benchmark.config import FIELDS, RUN_INDEPENDENT_KEYS, Config, ConfigError, _coerce, resolve
from benchmark.files import _alive, check_writable, clean_stale, locked, write_atomic
from benchmark.results.record import RecordError, RunRecord
from benchmark.results.schema import WITH_METRICS, norm
from benchmark.results.store import read_record
from benchmark.sweepfile import engine, expand, find_sweep, load  # noqa: F401 (the sweep file API, re-exported)

#: proposals tried before a random/bayes search counts its space as exhausted (every one already run)
MAX_PROPOSALS = 50


@dataclass
class Planned:
    run_id: str
    experiment: str
    overrides: dict
    cfg: Config
    #: the sweep's parameters of this run, as W&B's config holds them (``{name: value}``)
    params: dict | None = None


def plan(sweep: dict, overrides: dict | None = None, select: list[str] | None = None,
         seeds: int | None = None) -> list[Planned]:
    """The runs of a grid ``sweep``: grid points (x ``seeds``), filtered by ``select`` name patterns."""
    from benchmark.models.backbones import check_align, check_backbone  # (torch: not before the sweep file is checked)
    from benchmark.run import run_id_for

    points = expand(sweep)
    if seeds:
        if "seed" in sweep["parameters"]:
            raise ConfigError("--seeds conflicts with the sweep's own 'seed' parameter; use one of them")
        points = [{**p, "seed": s} for p in points for s in range(seeds)]
    out, seen = [], set()
    for point in points:
        params = dict(point)
        experiment = point.pop("experiment")
        if select and not any(fnmatch.fnmatchcase(experiment, pat) for pat in select):
            continue
        ov = {**point, **(overrides or {})}
        cfg = resolve(experiment, ov)  # validates every run before any starts
        check_backbone(cfg.backbone)
        check_align(cfg)
        rid = run_id_for(cfg, ov)
        if rid in seen:
            raise ConfigError(f"two grid points resolve to the same run {rid}")
        seen.add(rid)
        out.append(Planned(rid, experiment, ov, cfg, params))
    if select and not out:
        raise ConfigError(f"--select {' '.join(select)} matches no experiment of the sweep")
    return out


def check_inputs(planned: list[Planned]) -> None:
    """Every planned run's data and members (``pipeline.check_input``, each distinct dataset read once),
    before any run starts: an input error such as a manifest every run reads, or an ORL run with the
    default min_faces_per_person, is one line naming the run, not a failed record per run. What only a
    run finds (weights it cannot load, unreadable images) stays that run's recorded failure."""
    from benchmark.pipeline import check_input

    seen: dict = {}
    for p in planned:
        try:
            check_input(p.cfg, seen)
        except ConfigError as exc:
            raise ConfigError(f"run {p.run_id}: {exc}") from None


def _plain(v):
    """numpy scalars/arrays from ``sweeps`` as plain Python values (YAML, JSON and Config take them)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.generic, np.ndarray)):
        return _plain(v.tolist())
    return v


class Search:
    """One sweep on one results folder: its runs (records and claims), proposals, stop decisions."""

    def __init__(self, sweep: dict, out_dir: Path, overrides: dict | None = None, search_seed: int = 0,
                 planned: list[Planned] | None = None):
        self.sweep, self.out, self.overrides, self.seed = sweep, out_dir, dict(overrides or {}), search_seed
        self.claims = out_dir / ".claims"
        self.params = sweep["parameters"]
        self.metric = (sweep.get("metric") or {}).get("name")
        self.goal = (sweep.get("metric") or {}).get("goal", "minimize")
        sweeps = engine()[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            #: the file with W&B's defaults filled in, as its engine reads it (server keys left out)
            kept = {k: v for k, v in sweep.items() if k not in ("run_cap", "parameters")}
            self.engine_cfg = sweeps.SweepConfig({**kept, "parameters": _flat(sweep["parameters"])})
        #: the parameters given as nested blocks (the engine sees them flat)
        self.nested = {n for n, spec in self.params.items() if isinstance(spec, dict) and "parameters" in spec}
        #: a grid's runs are its plan; a random/bayes search's runs are those it would have proposed
        self.planned = {p.run_id: p for p in planned} if planned is not None else None
        self._read: dict[str, tuple] = {}  # run id -> (status.json mtime, member row or None)

    # --- a run's identity --------------------------------------------------------------------------
    def planned_for(self, params: dict) -> Planned:
        """The run of the sweep's parameters ``params``; its id comes from the validated config, so
        the same parameters read back from a record give the same id."""
        from benchmark.models.backbones import check_backbone
        from benchmark.run import run_id_for

        point = {k: v for k, v in params.items() if k != "experiment"}
        ov = {**point, **self.overrides}
        cfg = resolve(params["experiment"], ov)
        check_backbone(cfg.backbone)
        values = cfg.to_dict()
        return Planned(run_id_for(cfg, {k: values[k] for k in ov}), params["experiment"], ov, cfg, params)

    def params_of(self, cfg: dict) -> dict:
        """A record's config as the sweep's parameters (W&B's values: a categorical value as the
        file spells it, a nested block as its mapping)."""
        out = {}
        for name, spec in self.params.items():
            value = cfg.get(name)
            if "parameters" in spec:
                if isinstance(value, (list, tuple)):  # member_weights: recorded in members' order
                    value = dict(zip(cfg.get("members") or (), value))
                value = {k: (value or {}).get(k) for k in spec["parameters"]}
            elif "values" in spec:
                same = [v for v in spec["values"] if name == "experiment" or norm(_coerce(name, v)) == norm(value)]
                value = same[0] if same else value
            out[name] = value
        return out

    def _member(self, run_dir: Path) -> dict | None:
        """The record's row with its ``params`` when it is a run of this sweep, else None."""
        if self.planned is not None:
            if run_dir.name not in self.planned:
                return None
            return {**read_record(run_dir), "params": self.planned[run_dir.name].params}
        try:
            params = self.params_of(RunRecord(run_dir).config())
            if self.planned_for(params).run_id != run_dir.name:
                return None
        except (ConfigError, KeyError, TypeError):
            return None
        return {**read_record(run_dir), "params": params}

    # --- the runs so far -----------------------------------------------------------------------------
    def members(self) -> list[dict]:
        """Recorded runs of this sweep (rows of the results table plus ``params``), by start time;
        each record is read again only when its ``status.json`` changed."""
        rows = []
        for d in sorted(self.out.iterdir()) if self.out.is_dir() else []:
            status = d / "status.json"
            if d.is_dir() and not d.name.startswith(".") and status.is_file():
                stamp = status.stat().st_mtime_ns
                if self._read.get(d.name, (None,))[0] != stamp:
                    self._read[d.name] = (stamp, self._member(d))
                if self._read[d.name][1] is not None:
                    rows.append(self._read[d.name][1])
        return sorted(rows, key=lambda r: (r.get("started") or 0, r["run_id"]))

    def live_claims(self) -> dict[str, dict]:
        """Runs in progress in other processes: ``{run_id: {"params", "history"}}``; a dead runner's
        claim (its lock free) is removed."""
        out = {}
        for path in sorted(self.claims.glob("*.json")):
            rid = path.stem
            with locked(self.claims / f"{rid}.lock", blocking=False) as free:
                if free:  # its runner died: the run was neither finished nor recorded
                    path.unlink(missing_ok=True)
                    continue
            try:
                claim = json.loads(path.read_text())
                mine = rid in self.planned if self.planned is not None else \
                    self.planned_for(claim["params"]).run_id == rid
            except (OSError, ValueError, KeyError, TypeError):  # being replaced right now, or not a run of ours
                continue
            if mine:
                out[rid] = claim
        return out

    def sweep_runs(self, members: list[dict] | None = None, claims: dict | None = None,
                   exclude: str | None = None) -> list:
        """Every run as W&B's engine sees it (``sweeps.SweepRun``): state, parameters, summary
        metrics and the per-epoch history (``history.csv``) of each record, and the history so far
        of each run in progress. (``SweepRun`` takes W&B's API names, ``summaryMetrics`` and
        ``sampledHistory``: under pydantic 2 its field names are silently ignored.)"""
        sweeps = engine()[0]
        members = self.members() if members is None else members
        claims = self.live_claims() if claims is None else claims
        runs = []
        for row in members:
            if row["run_id"] == exclude or row["status"] == "damaged":
                continue
            state = {"ok": "finished", "stopped": "finished", "failed": "failed"}[row["status"]]
            if "_history" not in row:  # read once per record (members() keeps its rows until it changes)
                row["_history"] = []
                if row["status"] != "failed":
                    try:
                        row["_history"] = _history_rows(RunRecord(row["run_dir"]).history())
                    except RecordError:
                        pass
            history = row["_history"]
            summary = {k: v for k, v in row.items() if "/" in str(k) and isinstance(v, (int, float))
                       and not (isinstance(v, float) and math.isnan(v))}
            runs.append(sweeps.SweepRun(name=row["run_id"], state=state,
                                        config=_wandb_config(row["params"], self.nested),
                                        summaryMetrics=summary, sampledHistory=history,
                                        stopped=row["status"] == "stopped"))
        for rid, claim in claims.items():
            if rid != exclude and rid not in {r.name for r in runs}:
                runs.append(sweeps.SweepRun(name=rid, state="running",
                                            config=_wandb_config(claim["params"], self.nested),
                                            sampledHistory=claim.get("history", [])))
        return runs

    # --- proposals -----------------------------------------------------------------------------------
    def propose(self, runs: list, taken: set[str]) -> Planned | None:
        """The next configuration of a random/bayes search given ``runs``, not one of ``taken``;
        reproducible: the engine's random draws are seeded by (search seed, runs so far, attempt)."""
        sweeps = engine()[0]
        for attempt in range(MAX_PROPOSALS):
            seed = int(np.random.SeedSequence([self.seed, len(runs), attempt]).generate_state(1)[0])
            saved = random.getstate(), np.random.get_state()
            random.seed(seed)
            np.random.seed(seed)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    suggestion = sweeps.next_run(self.engine_cfg, runs)
            finally:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
            if suggestion is None:
                return None
            p = self.planned_for(_nested({k: _plain(v["value"]) for k, v in suggestion.config.items()}))
            if p.run_id not in taken:
                return p
        return None

    def write_claim(self, p: Planned, history: list[dict] | None = None) -> None:
        write_atomic(self.claims / f"{p.run_id}.json",
                     json.dumps({"params": p.params, "history": _history_rows(pd.DataFrame(history or []))},
                                default=str))

    # --- early termination ----------------------------------------------------------------------------
    def stopper(self, p: Planned):
        """``should_stop(history)`` for ``benchmark.run.run`` when the sweep has ``early_terminate``:
        W&B's Hyperband (``sweeps.stop_runs``) on every run's history, this one as running."""
        if "early_terminate" not in self.sweep:
            return None
        sweeps = engine()[0]

        def should_stop(history: list[dict]) -> bool:
            self.write_claim(p, history)  # the other runners' bands see this run's epochs too
            me = sweeps.SweepRun(name=p.run_id, state="running", config=_wandb_config(p.params, self.nested),
                                 sampledHistory=_history_rows(pd.DataFrame(history)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stop = sweeps.stop_runs(self.engine_cfg, self.sweep_runs(exclude=p.run_id) + [me])
            if not any(r.name == p.run_id for r in stop):
                return False
            tqdm.write(self._stop_line(me, len(history)), file=sys.stderr)
            return True

        return should_stop

    def _stop_line(self, me, epoch: int) -> str:
        """Which run Hyperband stopped, after which epoch, and why: its best so far against the band's
        threshold (``sweeps``' ``early_terminate_info``: values are negated when maximizing)."""
        info, sign = me.early_terminate_info, -1 if self.goal == "maximize" else 1
        values = [sign * v for v in me.metric_history(self.metric, filter_invalid=True)]
        band, threshold = [(b, t) for b, t in zip(info["bands"], info["thresholds"]) if b < len(values)][-1]
        return (f"{me.name}: stopped by Hyperband (early_terminate) after epoch {epoch}: its best {self.metric} "
                f"so far, {sign * min(values):.4g}, is {'below' if sign < 0 else 'above'} {sign * threshold:.4g}, "
                f"the cut the sweep's runs set at epoch {band + 1}")

    # --- when to stop starting runs ------------------------------------------------------------------
    def finished_because(self, members: list[dict], claims: dict) -> str | None:
        """Why no further run may start (``run_cap`` reached, ``metric.target`` reached), else None."""
        cap = self.sweep.get("run_cap")
        n = len({r["run_id"] for r in members} | set(claims))
        if cap is not None and n >= cap:
            return f"run_cap {cap} reached ({n} runs)"
        target = (self.sweep.get("metric") or {}).get("target")
        if target is not None:
            sign = 1 if self.goal == "maximize" else -1
            for r in members:
                v = r.get(self.metric)
                if r["status"] in WITH_METRICS and isinstance(v, (int, float)) and sign * (v - target) >= 0:
                    return f"metric.target reached: {r['run_id']} has {self.metric} {v:.4g} (target {target})"
        return None


def _history_rows(df: pd.DataFrame) -> list[dict]:
    """A history table as W&B's logged rows: numbers only, missing values left out."""
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()
             if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
            for row in df.to_dict("records")]


def _wandb_config(params: dict, nested: set[str]) -> dict:
    """A run's parameters as the engine reads them (``nested`` blocks as dotted names, ``_flat``)."""
    return {k: {"value": v} for k, v in _flat({n: {"parameters": v} if n in nested else v
                                               for n, v in params.items()}).items()}


def _flat(spec: dict) -> dict:
    """A nested block (``loss_args: {parameters: {margin: ...}}``) as dotted names, ``loss_args.margin``:
    the sweeps engine's random and bayes search sample flat parameters only (a nested block was
    silently left out of every proposal)."""
    out = {}
    for name, value in spec.items():
        inner = value.get("parameters") if isinstance(value, dict) else None
        if isinstance(inner, dict):
            out.update({f"{name}.{k}": v for k, v in inner.items()})
        else:
            out[name] = value
    return out


def _nested(values: dict) -> dict:
    """``_flat``'s dotted names of a proposal back as mappings (no config key has a dot)."""
    out: dict = {}
    for name, value in values.items():
        key, dot, sub = name.partition(".")
        if dot:
            out.setdefault(key, {})[sub] = value
        else:
            out[name] = value
    return out


class Budget:
    """``--budget MINUTES``: a run starts only when it will likely end within the budget. The estimate
    is the mean wall time (``time/total_s``) of the sweep's recorded runs on this machine, cold-cache
    feature extraction included where a run paid it. The first run of each invocation always starts
    (``started``), however small the budget; the run in progress is always finished and recorded.
    The budget is this invocation's: a resumed sweep gets a fresh one (the summary shows the
    folder's total)."""

    def __init__(self, minutes: float | None):
        if minutes is not None and not math.isfinite(minutes):
            raise ConfigError(f"--budget {minutes} is not a number of minutes; give a finite number, or leave "
                              "--budget out for no limit")
        if minutes is not None and not minutes > 0:
            raise ConfigError(f"--budget {minutes}: give the minutes the sweep may take, > 0")
        self.seconds = None if minutes is None else 60 * minutes
        self.t0 = time.monotonic()
        #: runs this invocation started
        self.started = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @staticmethod
    def estimate(members: list[dict]) -> float | None:
        spent = [r["time/total_s"] for r in members if isinstance(r.get("time/total_s"), (int, float))]
        return statistics.fmean(spent) if spent else None

    def runs_fit(self, members: list[dict]) -> int | None:
        """How many more runs the budget left likely fits (at least this invocation's first); None
        without a budget or a recorded run to estimate from."""
        est = self.estimate(members)
        if self.seconds is None or not est:
            return None
        return max(int(max(self.seconds - self.elapsed(), 0) // est), 0 if self.started else 1)

    def exhausted(self, members: list[dict]) -> str | None:
        if self.seconds is None or not self.started:
            return None
        left, est = self.seconds - self.elapsed(), self.estimate(members)
        if left <= 0 or (est is not None and est > left):
            return (f"budget: {max(left, 0) / 60:.1f} min left, the next run is estimated at "
                    f"{(est or 0) / 60:.1f} min (mean wall time of the sweep's {len(members)} recorded runs)")
        return None


def run_sweep(sweep_path: Path | str, out: Path | str | None = None, overrides: dict | None = None, *,
              select: list[str] | None = None, seeds: int | None = None, rerun: bool = False,
              rerun_failed: bool = False, budget: float | None = None, search_seed: int = 0) -> pd.DataFrame:
    """Run the sweep until done (grid: every planned run not yet recorded; random/bayes: until
    ``run_cap``, ``metric.target`` or the budget); returns one row per run this process met, and in
    ``df.attrs["summary"]`` what the sweep cost and why it ended. Every refusal comes before any run."""
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (got {seeds}): every configuration runs with seeds 0..N-1")
    if search_seed < 0:
        raise ConfigError(f"--search-seed must be >= 0 (got {search_seed}): it seeds W&B's engine")
    budget_ = Budget(budget)
    sweep = load(sweep_path, overrides)
    method = sweep["method"]
    out_dir = Path(out or Path("results") / sweep["name"])
    grid = method == "grid"
    if not grid:
        given = [flag for flag, v in (("--select", select), ("--seeds", seeds), ("--rerun", rerun),
                                      ("--rerun-failed", rerun_failed)) if v]
        if given:
            raise ConfigError(f"{' '.join(given)} applies to grid sweeps; a {method} search proposes its runs "
                              "(add seed as a parameter to search over seeds)")
        if "run_cap" not in sweep and budget is None:
            raise ConfigError(f"a {method} search never ends by itself: set run_cap in {find_sweep(sweep_path)} "
                              "or give --budget MINUTES")
    planned = plan(sweep, overrides, select, seeds) if grid else None
    if grid:
        check_inputs(planned)
    check_writable(out_dir, "output folder (--out)")  # before any run, not after the first one trained
    clean_stale(out_dir)
    (out_dir / ".claims").mkdir(exist_ok=True)
    search = Search(sweep, out_dir, overrides, search_seed, planned)
    status = {"sweep": sweep["name"], "sweep_method": method, **({} if grid else {"search_seed": search_seed}),
              **({"early_terminate": sweep["early_terminate"]["type"]} if "early_terminate" in sweep else {})}
    rows, ended = [], []
    from benchmark.run import run  # (torch: not before the arguments are checked)

    def may_start(members: list[dict], claims: dict) -> bool:
        """Checked under the folder-wide proposal lock, so runners sharing a folder respect one cap."""
        reason = search.finished_because(members, claims) or budget_.exhausted(members)
        ended.extend([reason] if reason else [])
        return reason is None

    with _rerun_generation(out_dir) if rerun else nullcontext() as since:
        source = _grid_runs(search, planned, since, rerun_failed, may_start) if grid else \
            _proposed_runs(search, may_start)
        total = len(planned) if grid else sweep.get("run_cap")
        desc = f"sweep {sweep['name']}" + (" (--budget may end it sooner)" if budget_.seconds else "")
        with tqdm(desc=desc, unit="run", total=total) as bar:  # closed before a Ctrl-C's line

            def budget_total():
                """Under --budget the total is the runs so far plus those the budget left likely fits."""
                fits = budget_.runs_fit(search.members())
                if fits is not None:
                    bar.total = min(t for t in (total, bar.n + fits) if t is not None)
                    bar.set_description_str(f"sweep {sweep['name']} (total: what --budget likely fits)")

            budget_total()
            for item in source:
                bar.update()
                if isinstance(item, dict):  # skipped: recorded, or running elsewhere
                    rows.append(item)
                    continue
                bar.set_postfix_str(item.run_id)
                changed = config_change(out_dir / item.run_id, item.cfg)
                if changed:
                    tqdm.write(f"{item.run_id}: the recorded config differs from the experiment's now ({changed}): "
                               "rerun", file=sys.stderr)
                budget_.started += 1
                run(item.cfg, out_dir, item.run_id, group=sweep["name"], raise_errors=False,
                    should_stop=search.stopper(item), status=status)
                budget_total()
                rows.append({"run_id": item.run_id, "experiment": item.experiment,
                             "action": f"rerun (config changed: {changed})" if changed else "ran",
                             **_summary(out_dir / item.run_id)})
    df = pd.DataFrame(rows)
    df.attrs["summary"] = _costs(df, budget_, ended[0] if ended else None, len(planned) if grid else None,
                                 search.members())
    return df


def _grid_runs(search: Search, planned: list[Planned], since: float | None, rerun_failed: bool, may_start):
    """The grid's runs in plan order: a Planned to run (claimed while the caller runs it) or a row
    saying why it is skipped; ends when ``may_start(members, claims)`` says no."""
    for p in planned:
        run_dir = search.out / p.run_id
        row = {"run_id": p.run_id, "experiment": p.experiment}
        if _done(run_dir, p.cfg, since, rerun_failed):
            yield {**row, "action": "skipped (recorded)", **_summary(run_dir)}
            continue
        with ExitStack() as claim:
            with locked(search.claims / ".propose.lock"):
                claims = search.live_claims()  # before the records: see _proposed_runs
                if not may_start(search.members(), claims):
                    return
                # an exclusive, non-blocking claim on the run; released by the OS if this runner dies
                claimed = claim.enter_context(locked(search.claims / f"{p.run_id}.lock", blocking=False))
                # read once under the claim: while it is held no other runner can finish the run
                done = claimed and _done(run_dir, p.cfg, since, rerun_failed)
                if claimed and not done:
                    search.write_claim(p)
            if not claimed:
                yield {**row, "action": "skipped (running elsewhere)", "status": "running"}
            elif done:  # finished by another runner between the first check and the claim
                yield {**row, "action": "skipped (recorded)", **_summary(run_dir)}
            else:
                try:
                    yield p
                finally:
                    (search.claims / f"{p.run_id}.json").unlink(missing_ok=True)


def _proposed_runs(search: Search, may_start):
    """A random/bayes search's runs: each proposed from the folder's runs under the folder-wide
    proposal lock and claimed before that lock is released, so no two runners take one configuration."""
    held_elsewhere: set[str] = set()
    while True:
        with ExitStack() as claim:
            with locked(search.claims / ".propose.lock"):
                # claims first: a run that ends meanwhile writes its record before it drops its
                # claim, so it is in one of the two (records first, it could fall between them)
                claims = search.live_claims()
                members = search.members()
                if not may_start(members, claims):
                    return
                taken = {r["run_id"] for r in members if r["status"] != "damaged"} | set(claims) | held_elsewhere
                p = search.propose(search.sweep_runs(members, claims), taken)
                if p is None:
                    return
                if not claim.enter_context(locked(search.claims / f"{p.run_id}.lock", blocking=False)):
                    held_elsewhere.add(p.run_id)  # claimed without a proposal file (a grid runner)
                    continue
                search.write_claim(p)
            try:
                yield p
            finally:
                (search.claims / f"{p.run_id}.json").unlink(missing_ok=True)


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

    Concurrent ``--rerun`` sweeps on one folder share it (``.claims/rerun.generation``: its start and the
    pids of the sweeps in it), so that a rerun claims like a first run: a run one of them redid is not
    redone by the other. A rerun started when none of them is running any more begins a new one."""
    # not *.json: those are the claims of runs in progress (Search.live_claims)
    marker, lock = out_dir / ".claims" / "rerun.generation", out_dir / ".claims" / "rerun.lock"

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
    done = status in WITH_METRICS or (status == "failed" and not rerun_failed)
    return done and config_change(run_dir, cfg) is None


SUMMARY = ("status", "error", "stopped_epoch", "val/score", "test/score", "test/top1", "time/total_s", "time/cost_s")


def _summary(run_dir: Path) -> dict:
    row = read_record(run_dir)
    return {k: row.get(k) for k in SUMMARY}


def _costs(df: pd.DataFrame, budget: Budget, ended: str | None, n_planned: int | None,
           members: list[dict]) -> list[str]:
    """What the sweep cost and what remained, for the end of the summary; and what the folder's
    recorded runs of the sweep (``members``) took in all, since ``--budget`` is per invocation."""
    ran = df[df["action"] == "ran"] if "action" in df else df
    lines = []
    if len(ran):
        wall = pd.to_numeric(ran.get("time/total_s"), errors="coerce").sum()
        cost = pd.to_numeric(ran.get("time/cost_s"), errors="coerce").sum()
        stopped = int((ran["status"] == "stopped").sum())
        lines.append(f"cost: {len(ran)} run(s) took {budget.elapsed() / 60:.1f} min ({wall / 60:.1f} min inside runs). "
                     f"Each alone on a cold feature cache would cost {cost / 60:.1f} min in all (time/cost_s: "
                     "features they share counted once per run, so this sum exceeds the wall time when runs share them)"
                     + (f"; {stopped} stopped early (early_terminate)" if stopped else ""))
    if budget.seconds is not None:
        lines.append(f"budget {budget.seconds / 60:.1f} min: {max(budget.seconds - budget.elapsed(), 0) / 60:.1f} "
                     "min remained")
    if members:
        spent = sum(r["time/total_s"] for r in members if isinstance(r.get("time/total_s"), (int, float)))
        lines.append(f"the folder holds {len(members)} recorded run(s) of this sweep, {spent / 60:.1f} min inside "
                     "runs in all" + ("; --budget limits each invocation, not the folder" if budget.seconds else ""))
    if ended:
        lines.append(f"stopped starting runs: {ended}")
    if n_planned is not None and ended:
        lines.append(f"{n_planned - len(df)} planned run(s) not started (rerun the same command to continue)")
    return lines


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
    summary = df.attrs.get("summary", [])
    if df.empty:
        return "\n".join(["no runs", *summary])
    cols = [c for c in ("run_id", "action", "status", "stopped_epoch", "val/score", "test/score", "test/top1",
                        "time/total_s", "time/cost_s", "error") if c in df and df[c].notna().any()]
    table = df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}", max_colwidth=60, na_rep="")
    return "\n".join([table, *summary])


def exit_code(df: pd.DataFrame) -> int:
    return int("status" in df and (df["status"] == "failed").any())
