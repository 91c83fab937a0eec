"""The results store: records -> DataFrame, W&B runs -> the same DataFrame, CSV/Parquet export."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmark import record, store
from benchmark.config import Config, dump_yaml


def _write(out, run_id, metrics=None, error=None, **cfg):
    files = {"config.yaml": dump_yaml(Config(experiment=run_id, **cfg))}
    if metrics is not None:
        files["metrics.json"] = json.dumps(metrics)
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
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.load(tmp_path / "nope")
