"""The results store: records -> DataFrame, W&B runs -> the same DataFrame, CSV/Parquet export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from benchmark.results import record, store
from benchmark.config import Config, ConfigError, dump_yaml
from synthetic_results import ok_files


def _write(out, run_id, metrics=None, error=None, **cfg):
    files = {"config.yaml": dump_yaml(Config(experiment=run_id, **cfg))}
    if metrics is not None:
        files = ok_files(files | {"metrics.json": json.dumps(metrics)})
    record.write(out, run_id, files, {"status": "failed" if error else "ok", "error": error})


@pytest.fixture
def results(tmp_path):
    _write(tmp_path, "a", {"val/score": 500.0, "test/score": 480.0, "time/cost_s": 10.0}, lr=0.01)
    _write(tmp_path, "b", {"val/score": 600.0, "test/score": 590.0, "time/cost_s": 20.0}, seed=1, augment=False)
    _write(tmp_path, "c", error="FloatingPointError: loss became nan", lr=0.1)
    (tmp_path / ".tmp-d-123").mkdir()  # an unfinished writer's folder is not a run
    return tmp_path


def test_load_one_row_per_run_with_config_and_metrics(results):
    df = store.load(results).set_index("run_id")
    assert list(df.index) == ["a", "b", "c"]
    assert df.loc["a", "lr"] == 0.01 and df.loc["b", "seed"] == 1 and df.loc["b", "augment"] == "none"
    assert df.loc["b", "val/score"] == 600.0 and df.loc["a", "time/cost_s"] == 10.0
    assert df.loc["c", "status"] == "failed" and "nan" in df.loc["c", "error"]
    assert pd.isna(df.loc["c", "test/score"])
    assert df.loc["a", "split"] == (0.5, 0.2, 0.3)


def test_export_csv_and_parquet_round_trip(results, tmp_path):
    df = store.load(results)
    back_csv = pd.read_csv(store.export(df, tmp_path / "r.csv"))
    back_pq = pd.read_parquet(store.export(df, tmp_path / "r.parquet"))
    for back in (back_csv, back_pq):
        assert list(back["run_id"]) == ["a", "b", "c"]
        assert back["test/score"].tolist()[:2] == [480.0, 590.0]


def test_wandb_runs_convert_to_the_same_shape(results):
    runs = [
        {"name": "efficientnet_b0-bs8", "state": "finished",
         "config": {"experiment": "efficientnet_b0-bs8", "batch_size": 8, "run_id": "r1", "_wandb": {}},
         "summary": {"test/score": 410.5, "val/score": 420.0, "score_per_minute": 3.2, "_runtime": 9,
                     "retrieval_examples": {"_type": "table-file"}}},
        {"name": "vit", "state": "crashed", "config": {"experiment": "vit", "lr": 0.1}, "summary": {}},
    ]
    df = store.from_wandb_runs(runs).set_index("run_id")
    assert list(df.index) == ["r1", "vit"]
    assert df.loc["r1", "status"] == "ok" and df.loc["r1", "batch_size"] == 8
    assert df.loc["r1", "test/score"] == 410.5 and df.loc["r1", "score_per_minute"] == 3.2
    assert "_runtime" not in df and "_wandb" not in df and "retrieval_examples" not in df
    assert df.loc["vit", "status"] == "failed" and "crashed" in df.loc["vit", "error"]
    local = store.load(results)
    assert {"run_id", "status", "error", "experiment", "val/score"} <= set(store.from_wandb_runs(runs)) & set(local)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; give the --out folder"):
        store.load(tmp_path / "nope")


@pytest.mark.slow
def test_results_choose_and_report_import_no_torch():
    """The results layer and the commands that only read results never import torch."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import benchmark.results, benchmark.choose, benchmark.report, benchmark.report.build"],
                         capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "benchmark" in imported and "pandas" in imported  # the measurement works
    assert "torch" not in imported


@pytest.mark.slow
def test_reading_and_choosing_never_load_torch(results, tmp_path):
    """Using them (records read and validated, configs built, a choice written) stays torch-free too."""
    code = f"""
import sys
from benchmark.results import store
from benchmark.choose import choose, write_best
df = store.load({str(results)!r})
write_best(choose(df), {str(tmp_path / 'best.yaml')!r})
print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, content, reason", [
    ("metrics.json", '{"val/score": 50', "unreadable (JSONDecodeError"),
    ("metrics.json", '{"val/score": "high"}', "metric 'val/score' = 'high' is not a number"),
    ("metrics.json", None, "is missing"),
    ("status.json", '{"state": "ok"}', "no 'status' of ok, stopped, failed"),
    ("config.yaml", "lr: [fast\n", "unreadable"),
    ("config.yaml", "learning_rate: 0.1\n", "unknown config key(s): learning_rate"),
    # every file of a successful record, not only the ones the table reads (issue 16)
    ("history.csv", None, "is missing"),
    ("embeddings.npz", None, "is missing"),
    ("split.json", None, "is missing"),
    ("split.json", "{}", "no 'items' list"),
    ("environment.json", "[1]", "expected a mapping, got a list"),
])
def test_an_unreadable_record_file_is_a_damaged_run_naming_the_file(results, name, content, reason):
    path = results / "a" / name
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    df = store.load(results).set_index("run_id")
    assert list(df.index) == ["a", "b", "c"]  # the others are read as before
    assert df.loc["a", "status"] == "damaged"
    assert df.loc["a", "error"].startswith(f"damaged record: {path} ") and reason in df.loc["a", "error"]
    assert df.loc["b", "status"] == "ok" and df.loc["b", "val/score"] == 600.0


@pytest.mark.parametrize("metrics, reason", [
    ({"test/score": 480.0}, "required metric(s) val/score missing"),
    ({"val/score": 500.0}, "required metric(s) test/score missing"),
    ({"val/score": 1200.0, "test/score": 480.0}, "metric 'val/score' = 1200.0 is impossible (outside [0, 1000])"),
    ({"val/score": 500.0, "test/score": 480.0, "test/top1": 1.5}, "metric 'test/top1' = 1.5 is impossible"),
    ({"val/score": 500.0, "test/score": 480.0, "time/cost_s": -3.0}, "metric 'time/cost_s' = -3.0 is impossible"),
    ({"val/score": 500.0, "test/score": float("inf")}, "metric 'test/score' = inf is impossible"),
    ({"val/score": 500.0, "test/score": None, "test/n_queries": 40}, "test/score is null although test is scorable"),
    ({"val/score": 500.0, "test/score": 480.0, "test/top1": 0.5, "test/top5": 0.4, "test/top10": 0.6},
     "Top-1/5/10 = [0.5, 0.4, 0.6] are not increasing"),
    ({"val/score": 500.0, "test/score": 480.0, "test/top1": 0.5, "test/top5": 0.6, "test/top10": 0.7},
     "test/score = 480.0 is not 600 Top-1 + 300 Top-5 + 100 Top-10"),
])
def test_a_record_with_missing_or_impossible_metrics_is_damaged_never_ranked(results, metrics, reason):
    """A record read as ok with its content missing (a default filled in) or impossible used to be ranked."""
    from benchmark.choose import choose

    (results / "b" / "metrics.json").write_text(json.dumps(metrics))
    df = store.load(results).set_index("run_id")
    assert df.loc["b", "status"] == "damaged" and reason in df.loc["b", "error"], df.loc["b", "error"]
    assert choose(store.load(results))["run_ids"] == ["a"]  # b (val/score 600) is not ranked


def test_embeddings_without_an_array_are_damage(results):
    (results / "b" / "embeddings.npz").write_bytes(record.npz_bytes(embeddings=np.zeros((2, 3)), labels=np.arange(2)))
    row = store.load(results).set_index("run_id").loc["b"]
    assert row["status"] == "damaged" and "embeddings.npz is unreadable (ValueError: array(s) identities, paths missing" \
        in row["error"]


def test_unscorable_nulls_and_a_failed_run_without_error(results):
    (results / "b" / "metrics.json").write_text(json.dumps(
        {"val/score": None, "val/n_queries": 0, "test/score": 480.0, "test/n_queries": 40}))
    assert store.load(results).set_index("run_id").loc["b", "status"] == "ok"  # null where it may be
    (results / "c" / "status.json").write_text('{"status": "failed"}')
    row = store.load(results).set_index("run_id").loc["c"]
    assert row["status"] == "damaged" and "a failed run without its 'error'" in row["error"]


def test_record_reader_validates_every_file(tmp_path):
    from benchmark.results.record import RecordError, RunRecord

    cfg = Config(experiment="r")
    emb = np.eye(3, 4, dtype=np.float32)
    rec = RunRecord.write(tmp_path, "r", {
        "config.yaml": dump_yaml(cfg), "metrics.json": json.dumps({"val/score": float("nan"), "val/n_queries": 0, "test/score": 400.0,
                                                         "best_epoch": 2}),
        "history.csv": "epoch,train/loss\n1,2.5\n2,1.5\n", "split.json": "{}", "environment.json": '{"device": "cpu"}',
        "embeddings.npz": record.npz_bytes(embeddings=emb, labels=np.arange(3), identities=np.array(list("abc")),
                                           paths=np.array(["x", "y", "z"]))}, {"status": "ok"})
    assert rec.config() == cfg.to_dict() and rec.metrics() == {"val/score": None, "val/n_queries": 0, "test/score": 400.0,
                                                       "best_epoch": 2}
    assert rec.history()["train/loss"].tolist() == [2.5, 1.5] and rec.environment() == {"device": "cpu"}
    np.testing.assert_array_equal(rec.embeddings()["embeddings"], emb)
    (tmp_path / "r" / "embeddings.npz").write_bytes(record.npz_bytes(
        embeddings=emb, labels=np.arange(2), identities=np.array(list("abc")), paths=np.array(["x", "y", "z"])))
    with pytest.raises(RecordError, match="embeddings.npz is unreadable .*arrays of different lengths"):
        rec.embeddings()
    (tmp_path / "r" / "split.json").write_bytes(b"\x00\xff")
    with pytest.raises(RecordError, match=f"{tmp_path / 'r' / 'split.json'} is unreadable"):
        rec.split()


def test_wandb_runs_in_progress_are_skipped_and_losses_do_not_leak(tmp_path):
    history = [{"_step": 1, "train/loss": 2.5, "val/loss": 2.7, "val/score": 300.0, "epoch_s": 3.0, "_runtime": 4},
               {"_step": 2, "train/loss": 2.0, "val/loss": 2.4, "val/score": 350.0, "epoch_s": 3.5},
               {"_step": 3, "retrieval_examples": {"_type": "table-file"}}]
    runs = [
        {"name": "a", "state": "finished", "config": {"run_id": "a", "epochs": 2},
         "summary": {"test/score": 400.0, "val/score": 350.0, "train/loss": 2.0, "val/loss": 2.4, "epoch_s": 3.5,
                     "status": "ok"}, "history": history},
        {"name": "b", "state": "running", "config": {"run_id": "b"}, "summary": {"train/loss": 3.0}},
        {"name": "c", "state": "pending", "config": {}, "summary": {}},
    ]
    df = store.from_wandb_runs(runs, tmp_path / "h")
    assert list(df["run_id"]) == ["a"] and df.attrs["in_progress"] == ["b (running)", "c (pending)"]
    assert not {"train/loss", "val/loss", "epoch_s", "status_summary"} & set(df.columns)
    assert df.loc[0, "status"] == "ok" and df.loc[0, "test/score"] == 400.0
    written = pd.read_csv(tmp_path / "h" / "a" / "history.csv")
    assert df.loc[0, "run_dir"] == str(tmp_path / "h" / "a")
    assert written["epoch"].tolist() == [1, 2] and written["val/score"].tolist() == [300.0, 350.0]
    assert written["train/loss"].tolist() == [2.5, 2.0] and "_runtime" not in written


def test_without_wandb_the_wandb_paths_are_one_line_errors(monkeypatch, capsys):

    from benchmark import cli

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ModuleNotFoundError
    assert cli.main(["report", "--from-wandb", "e/p/s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --from-wandb needs wandb, which is not installed in this environment: pip install wandb"]
    monkeypatch.setenv("WANDB_SWEEP_ID", "s")
    assert cli.main(["run", "--experiment", "efficientnet_b0-bs8"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: started by `wandb agent` (WANDB_SWEEP_ID is set) but wandb is not installed")
