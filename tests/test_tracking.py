"""W&B tracking: offline run files hold what was logged; no wandb or a W&B error never costs the record."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark import tracking
from benchmark.config import from_dict
from benchmark.run import run

ROOT = Path(__file__).resolve().parents[1]


def _wandb_records(path: Path):
    """Decode a ``.wandb`` transaction log (W&B's LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(chunks)
            chunks = b""
            yield rec
        if length == 0 and kind == 0:
            break


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


@pytest.fixture
def tiny_cfg(tmp_path, monkeypatch):
    lfw = next((Path(c) for c in (os.environ.get("SCIKIT_LEARN_DATA"), ROOT.parent / "shared" / "data")
                if c and (Path(c) / "lfw_home").is_dir()), None)
    if lfw is None:
        pytest.skip("LFW not found: set SCIKIT_LEARN_DATA to the folder holding lfw_home/")
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(tmp_path / "cache"))
    return from_dict({"experiment": "tiny", "data_home": str(lfw), "max_identities": 3, "backbone": "resnet18",
                      "weights": "random", "image_size": 32, "resize": 36, "epochs": 2, "num_workers": 0})


def test_offline_run_directory_holds_the_logged_keys(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    metrics = run(tiny_cfg, out, "tiny-run", group="g")
    import wandb

    wandb.teardown()  # the W&B service writes the run file asynchronously; wait for it
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    history, summary, config, run_info = {}, {}, {}, None
    for rec in _wandb_records(runs[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            step = rec.history.step.num
            history[step] = {_key(i): json.loads(i.value_json) for i in rec.history.item}
        elif kind == "summary":
            summary |= {_key(i): json.loads(i.value_json) for i in rec.summary.update}
        elif kind == "config":
            config |= {_key(i): json.loads(i.value_json) for i in rec.config.update}
        elif kind == "run":
            run_info = rec.run
            config |= {_key(i): json.loads(i.value_json) for i in rec.run.config.update}
    assert run_info.display_name == "tiny-run" and run_info.run_group == "g"
    assert run_info.project == "retrieval-ablations"
    assert config["backbone"] == "resnet18" and config["epochs"] == 2 and config["run_id"] == "tiny-run"
    epochs = [h for h in history.values() if "train/loss" in h]
    assert [h["epoch_s"] > 0 for h in epochs] == [True, True]
    assert {"train/loss", "val/loss", "val/score", "val/top1"} <= set(epochs[-1])
    table = next(h for h in history.values() if "retrieval_examples._type" in h)
    assert table["retrieval_examples._type"] == "table-file" and table["retrieval_examples.nrows"] == 3
    assert summary["test/score"] == pytest.approx(metrics["test/score"])
    assert summary["time/cost_s"] == pytest.approx(metrics["time/cost_s"])


def test_runs_work_without_wandb(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(tracking, "wandb", None)
    assert tracking.wandb_mode(tiny_cfg) is None
    run(tiny_cfg, tmp_path / "out", "r")
    assert (tmp_path / "out" / "r" / "metrics.json").exists()
    assert not (tmp_path / "out" / "wandb").exists()


def test_disabled_and_none_modes(tiny_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode(tiny_cfg) is None
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.wandb_mode(tiny_cfg) == "offline"
    assert tracking.wandb_mode(tiny_cfg.replace(tracking="none")) is None
    monkeypatch.delenv("WANDB_MODE")
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    # no netrc (a path made absent here), a netrc that is a folder, a netrc without W&B: no credentials
    absent, folder, other = tmp_path / "absent", tmp_path / "netrc-folder", tmp_path / "other-netrc"
    folder.mkdir()
    other.write_text("machine example.com login me password secret\n")
    for netrc in (absent, folder, other):
        monkeypatch.setenv("NETRC", str(netrc))
        assert tracking.wandb_mode(tiny_cfg) == "offline", netrc
    # a netrc entry for W&B's host, found by wandb's own reader: online
    with_key = tmp_path / "wandb-netrc"
    with_key.write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    monkeypatch.setenv("NETRC", str(with_key))
    assert tracking.wandb_mode(tiny_cfg) == "online"
    monkeypatch.setenv("NETRC", str(absent))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode(tiny_cfg) == "online"


@pytest.mark.parametrize("broken", ["init", "log"])
def test_a_wandb_error_never_loses_the_record(tiny_cfg, tmp_path, monkeypatch, broken):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")

    def boom(*a, **k):
        raise RuntimeError("W&B is down")

    if broken == "init":
        monkeypatch.setattr(wandb, "init", boom)
    else:
        monkeypatch.setattr(tracking.Tracker, "_init", lambda self, *a: setattr(self, "run", _Broken()))
    with pytest.warns(UserWarning, match="W&B tracking stopped"):
        metrics = run(tiny_cfg, tmp_path / "out", "r")
    saved = json.loads((tmp_path / "out" / "r" / "metrics.json").read_text())
    assert saved["test/score"] == pytest.approx(metrics["test/score"])


class _Broken:
    def log(self, *a, **k):
        raise RuntimeError("W&B is down")

    summary = {}

    def finish(self, *a, **k):
        raise RuntimeError("W&B is down")


def _offline_run(path: Path) -> dict:
    """What an offline ``.wandb`` file holds: last run record, config, summary, history, exit."""
    out = {"run": None, "config": {}, "summary": {}, "history": {}, "exit": None}
    for rec in _wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"] |= {_key(i): json.loads(i.value_json) for i in rec.run.config.update}
        elif kind == "config":
            out["config"] |= {_key(i): json.loads(i.value_json) for i in rec.config.update}
        elif kind == "summary":
            out["summary"] |= {_key(i): json.loads(i.value_json) for i in rec.summary.update}
        elif kind == "history":
            out["history"][rec.history.step.num] = {_key(i): json.loads(i.value_json) for i in rec.history.item}
        elif kind == "exit":
            out["exit"] = rec.exit
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sweep_file,tracking", [("sweep.yaml", "auto"), ("sweep.yaml", "none"),
                                                 ("experiments/sweeps/search.yaml", "auto")])
def test_a_grid_point_under_wandb_agent(sweep_file, tracking, tiny_cfg, tmp_path, monkeypatch, capfd):
    """The command line ``wandb agent`` builds from a sweep file (W&B's own Agent code, its env vars,
    ``--key=value`` args), run offline: named and grouped as the offline runner does, no config-lock
    warnings, the summary holds the results, and the run is finished even with tracking=none. The
    Bayesian search's run gets the parameters W&B's engine (``sweeps.next_run``) proposes."""
    import warnings

    import yaml
    from wandb.wandb_agent import Agent

    sweep_doc = yaml.safe_load((ROOT / sweep_file).read_text())
    spec = sweep_doc["parameters"]["experiment"]
    name = spec["values"][0] if "values" in spec else spec["value"]
    group = sweep_doc["command"][sweep_doc["command"].index("--group") + 1]
    out = sweep_doc["command"][sweep_doc["command"].index("--out") + 1]
    # a user experiments folder redefines the grid point as a tiny run (same name): fast, and it
    # exercises $BENCHMARK_EXPERIMENTS in the agent's subprocess
    tiny = {k: v for k, v in tiny_cfg.to_dict().items() if k not in ("experiment", "split")} | {"batch_size": 8, "patience": 0}
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "tiny.yaml").write_text(yaml.safe_dump({"experiments": {name: tiny}}))
    monkeypatch.chdir(tmp_path)
    env = {"WANDB_MODE": "offline", "WANDB_SWEEP_ID": "sw1234", "WANDB_ENTITY": "ent", "WANDB_PROJECT": "proj",
           "WANDB_DIR": str(tmp_path), "WANDB_RUN_ID": "", "WANDB_SWEEP_PARAM_PATH": "",
           "BENCHMARK_EXPERIMENTS": str(tmp_path / "exps"), "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # ${interpreter} = python
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # also restores what the Agent writes into os.environ
    agent = Agent(api=None, queue=None, sweep_id="sw1234")
    agent._sweep_command = sweep_doc["command"]
    args = {"experiment": {"value": name}} | ({"tracking": {"value": "none"}} if tracking == "none" else {})
    if sweep_doc["method"] != "grid":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sweeps
        import random

        random.seed(0)  # one fixed proposal: the test does not draw a new configuration each time
        np.random.seed(0)
        proposal = sweeps.next_run({k: v for k, v in sweep_doc.items() if k != "run_cap"}, [])
        # plain values, as W&B's server sends them (the engine's draws are numpy scalars)
        args = {k: {"value": np.asarray(v["value"]).item()} for k, v in proposal.config.items()
                if k != "experiment"} | args
    agent._command_run({"type": "run", "run_id": "abc123", "args": args, "program": None})
    assert agent._run_processes["abc123"].wait(timeout=300) == 0
    err = capfd.readouterr().err
    assert "was locked" not in err and "Traceback" not in err
    import wandb

    wandb.teardown()
    (run_file,) = (tmp_path / out / "wandb").glob("offline-run-*-abc123/run-abc123.wandb")
    got = _offline_run(run_file)
    assert got["run"].display_name.startswith(name) and got["run"].run_group == group
    assert got["exit"] is not None and got["exit"].exit_code == 0
    (record,) = [d for d in (tmp_path / out).iterdir() if d.name.startswith(name)]
    metrics = json.loads((record / "metrics.json").read_text())
    for key in ("val/score", "test/score", "score_per_minute", "time/train_s"):
        assert got["summary"][key] == pytest.approx(metrics[key]), key
    assert got["summary"]["status"] == "ok"
    assert got["config"]["experiment"] == name and got["config"]["run_id"] == record.name
    assert got["config"]["backbone"] == "resnet18" and got["config"]["max_identities"] == 3
    for key, value in args.items():
        assert got["config"][key] == pytest.approx(value["value"]), key
    epochs = [h for h in got["history"].values() if "train/loss" in h]
    assert len(epochs) == (2 if sweep_doc["method"] == "grid" else args["epochs"]["value"])


def test_report_runs_have_job_type_report(tmp_path, monkeypatch):
    import types

    import wandb

    seen = {}

    class _Config(dict):
        def update(self, d, allow_val_change=None):
            super().update(d)

    def fake_init(**kw):
        seen.update(kw)
        return types.SimpleNamespace(config=_Config(kw["config"]))

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.setattr(wandb, "init", fake_init)
    tracker = tracking.report_tracker("sw1", tmp_path)
    assert (seen["job_type"], seen["name"], seen["group"]) == ("report", "report-sw1", "sw1")
    assert tracker.run.config["run_id"] == "report-sw1"


def test_examples_table_of_a_gallery_smaller_than_k(tmp_path):
    """A query -> gallery split of 3 test people (3 gallery items) with k=10: W&B refused the table
    ("expects 13 columns, found 6") and tracking of the run stopped."""
    from PIL import Image

    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(paths[-1])
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0, 1, 2, 0, 1, 2])
    sides = np.array(["query"] * 3 + ["gallery"] * 3)
    table = tracking.examples_table(emb, labels, ["a", "b", "c"] * 2, paths, n_queries=3, k=10, sides=sides)
    assert table.columns == ["query", "identity", "hits@k", "rank1", "rank2", "rank3"]
    assert len(table.data) == 3 and [row[2] for row in table.data] == [1, 1, 1]  # each person's one gallery item
