"""The two engines agree (augmentation off), and the feature cache is reused, keyed and self-healing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from benchmark import pipeline, run
from benchmark.features import engines
from benchmark.features.cache import FeatureCache
from benchmark.config import ConfigError

SCORES = ("top1", "top5", "top10", "map", "score")


def _assert_same_model(a, b, rel: float, emb_atol: float = 1e-4):
    """Two code paths trained the same head: the same split sizes, best epoch, per-epoch losses and
    learning rates, and test embeddings equal up to float rounding. Ranking metrics (top-k, mAP,
    score) of a tiny random model are NOT compared across paths: a near-tie flips with the CPU's
    float kernels (Intel vs AMD), whereas these quantities move by rounding only."""
    (ma, ha, _, _, ea), (mb, hb, _, _, eb) = a, b
    for split in ("val", "test"):
        assert ma[f"{split}/n_queries"] == mb[f"{split}/n_queries"] > 0
    assert ma["best_epoch"] == mb["best_epoch"] and len(ha) == len(hb)
    for x, y in zip(ha, hb):
        assert x["epoch"] == y["epoch"]
        for key in ("train/loss", "val/loss", "lr"):
            assert x[key] == pytest.approx(y[key], rel=rel), (x["epoch"], key)
    np.testing.assert_allclose(ea, eb, rtol=0, atol=emb_atol)


@pytest.mark.slow
def test_cached_and_reference_engines_agree(tiny_cfg, cache_dir):
    cfg = tiny_cfg(cache_dir=str(cache_dir), lr=0.01)
    cached = run.execute(cfg.replace(engine="cached"))
    ref = run.execute(cfg.replace(engine="reference"))
    _assert_same_model(cached, ref, rel=1e-4)
    assert len(cached[1]) == cfg.epochs
    for key in ("intra", "inter"):  # means of cosines: stable under rounding
        assert cached[0][f"test/{key}"] == pytest.approx(ref[0][f"test/{key}"], rel=1e-3, abs=1e-6), key
    # training really moved the head away from its initial loss, and not identically per epoch
    assert cached[1][0]["train/loss"] != cached[1][1]["train/loss"]


def test_engines_give_the_same_features_and_batches(tiny_cfg, cache_dir):
    cfg = tiny_cfg(cache_dir=str(cache_dir), max_identities=3)
    prep_c = pipeline.prepare(cfg.replace(engine="cached"))
    prep_r = pipeline.prepare(cfg.replace(engine="reference"))
    assert prep_c.df.equals(prep_r.df)
    for split in ("val", "test"):
        torch.testing.assert_close(prep_c.engine.eval_features(split), prep_r.engine.eval_features(split),
                                   rtol=1e-4, atol=1e-4)
    batches_c = list(prep_c.engine.train_batches(1))
    batches_r = list(prep_r.engine.train_batches(1))
    assert [len(y) for _, y in batches_c] == [len(y) for _, y in batches_r]
    assert sum(len(y) for _, y in batches_c) == (prep_c.df["split"] == "train").sum()
    for (xc, yc), (xr, yr) in zip(batches_c, batches_r):
        assert torch.equal(yc, yr)
        torch.testing.assert_close(xc, xr, rtol=1e-4, atol=1e-4)
    # training labels are class indices 0..n_classes-1
    labels = torch.cat([y for _, y in batches_c])
    assert set(labels.tolist()) == set(range(prep_c.engine.n_classes)) and prep_c.engine.n_classes == 3


@pytest.mark.slow
def test_feature_cache_is_reused_and_heals(tiny_cfg, cache_dir, count_extract):
    cfg = tiny_cfg(cache_dir=str(cache_dir), augment=True, epochs=2, patience=0)
    first, *_ = run.execute(cfg)
    # ONE pass makes the eval entry + one augmented view per epoch
    assert [len(c) for c in count_extract] == [3]
    entries = FeatureCache(cache_dir).entries()
    assert len(entries) == 3 and not any(e.get("broken") for e in entries)
    assert sorted(str(e["view"]) for e in entries) == ["0", "1", "eval"]
    shapes = {str(e["view"]): tuple(e["shape"]) for e in entries}
    assert shapes["eval"] == (39 + 35 + 21 + 36, 512)  # every image of the 4 first LFW people
    assert shapes["0"] == shapes["1"] and shapes["0"][0] < shapes["eval"][0]  # training images only

    count_extract.clear()
    second, *_ = run.execute(cfg)
    assert count_extract == []  # every feature came from the cache
    assert len(FeatureCache(cache_dir).entries()) == 3
    for key in [k for k in first if k.startswith(("val/", "test/"))] + ["best_epoch"]:
        assert second[key] == first[key], key
    # the features' cost is what computing them took, even when read back
    assert second["time/features_s"] == pytest.approx(first["time/features_s"], rel=1e-12)

    # a truncated file (e.g. a killed writer on a shared disk) is detected and recomputed
    files = sorted(cache_dir.glob("*.pt"), key=lambda p: p.stat().st_size)
    victim = files[-1]
    size = victim.stat().st_size
    original = torch.load(victim, weights_only=True)["features"]
    with open(victim, "r+b") as fh:
        fh.truncate(size // 2)
    count_extract.clear()
    third, *_ = run.execute(cfg)
    assert [len(c) for c in count_extract] == [1]  # only the broken entry is recomputed
    assert victim.stat().st_size == size
    assert not any(e.get("broken") for e in FeatureCache(cache_dir).entries())
    # the recomputed entry holds the same features up to float rounding (its pass made one view, not
    # three: the batches differ, so the kernels may round differently; ranking metrics are not compared)
    torch.testing.assert_close(torch.load(victim, weights_only=True)["features"], original, rtol=1e-4, atol=1e-5)
    assert third["test/n_queries"] == first["test/n_queries"]


def test_frozen_features_compute_only_the_eval_view(tiny_cfg, cache_dir, count_extract):
    """embedding=backbone trains nothing, so the augmented bank views (3 per image here) are not made."""
    cfg = tiny_cfg(cache_dir=str(cache_dir), augment="report", epochs=3, embedding="backbone")
    run.execute(cfg)
    assert [len(c) for c in count_extract] == [1]
    assert [str(e["view"]) for e in FeatureCache(cache_dir).entries()] == ["eval"]


def test_feature_cache_unit(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(12, dtype=torch.float32).reshape(3, 4)

    key = {"backbone": "x", "view": "eval"}
    a = cache.get_or_compute(key, compute)
    b = cache.get_or_compute(key, compute)
    assert (a["hit"], b["hit"], len(calls)) == (False, True, 1)
    assert torch.equal(a["features"], b["features"]) and a["cost_s"] == b["cost_s"]
    # another key -> another entry
    cache.get_or_compute({**key, "view": 0}, compute)
    assert len(calls) == 2 and len(cache.entries()) == 2
    # a file whose tensor no longer matches its checksum is recomputed
    path = cache.path(key)
    entry = torch.load(path, weights_only=True)
    entry["features"][0, 0] = 99.0
    torch.save(entry, path)
    c = cache.get_or_compute(key, compute)
    assert not c["hit"] and len(calls) == 3 and c["features"][0, 0] == 0
    # garbage is recomputed as well; entries() reports a broken file instead of failing
    path.write_bytes(b"garbage")
    assert [e.get("broken") for e in cache.entries()].count(True) == 1
    assert not cache.get_or_compute(key, compute)["hit"] and len(calls) == 4
    assert cache.clear() == 2 and cache.entries() == []



@pytest.mark.slow
def test_engines_agree_for_a_mined_metric_learning_loss(tiny_cfg, cache_dir):
    cfg = tiny_cfg(cache_dir=str(cache_dir), loss="supcon", miner="multi_similarity", samples_per_class=4,
                   scheduler="cosine", lr=0.01, epochs=3)
    cached = run.execute(cfg.replace(engine="cached"))
    _assert_same_model(cached, run.execute(cfg.replace(engine="reference")), rel=1e-4)
    h_cached = cached[1]
    assert h_cached[0]["train/loss"] != h_cached[-1]["train/loss"]
    assert h_cached[0]["lr"] == 0.01 > h_cached[1]["lr"] > h_cached[2]["lr"]  # cosine, per epoch in history


@pytest.mark.slow
def test_engines_agree_with_a_trainable_block(tiny_cfg, cache_dir):
    """fp32 boundary cache: the same network as the reference's full forward, up to float rounding;
    fp16 (the default) stays close. The shared frozen backbone is never modified by training."""
    cfg = tiny_cfg(cache_dir=str(cache_dir), trainable_blocks=1, lr=0.01, backbone_lr=0.01)
    backbone = pipeline.frozen_backbone(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    ref = run.execute(cfg.replace(engine="reference"))
    exact = run.execute(cfg.replace(engine="cached", boundary_dtype="float32"))
    _assert_same_model(exact, ref, rel=1e-4)
    half = run.execute(cfg.replace(engine="cached"))
    # fp16 stores the same fp32 activations rounded to fp16: equal within fp16's precision (2**-11)
    act16, act32 = (pipeline.prepare(cfg.replace(boundary_dtype=d)).engine.eval_all() for d in ("float16", "float32"))
    assert act16.dtype == torch.float16 and act32.dtype == torch.float32
    torch.testing.assert_close(act16.float(), act32, rtol=2**-10, atol=1e-6)
    assert not torch.equal(act16.float(), act32)
    for x, y in zip(half[1], ref[1]):  # training on them gives the same losses within 1%
        for key in ("train/loss", "val/loss"):
            assert x[key] == pytest.approx(y[key], rel=1e-2), key
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    # training the block changed the embedding: frozen (trainable_blocks=0) gives other test embeddings
    frozen = run.execute(cfg.replace(trainable_blocks=0))
    assert np.abs(frozen[4] - exact[4]).max() > 100 * 1e-4  # far outside _assert_same_model's tolerance
    # the boundary cache is keyed by its dtype and stores it
    entries = {e["dtype"]: e for e in FeatureCache(cache_dir).entries() if e.get("trainable_blocks")}
    assert set(entries) == {"float16", "float32"}
    assert entries["float16"]["shape"] == entries["float32"]["shape"] == [131, 512, 2, 2]  # layer4's input
    assert entries["float16"]["bytes"] < 0.6 * entries["float32"]["bytes"]


def test_boundary_cache_refuses_when_the_disk_is_too_small(tiny_cfg, cache_dir, monkeypatch, capsys):
    cfg = tiny_cfg(cache_dir=str(cache_dir), trainable_blocks=2, augment="report", epochs=2)
    monkeypatch.setattr(engines.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    # resnet18 at 64 px: the last 2 blocks (layer4) read layer3's output, 256 x 4 x 4; 131 eval images
    # + 2 bank views of the training images; units that show the numbers (it said "0.00 GB ... 0.00 GB")
    per_image = 256 * 4 * 4 * 2
    n_train = len(pipeline.prepare(cfg).engine.train_idx)
    total = (131 + 2 * n_train) * per_image
    assert 1e6 < total < 1e7
    refusal = rf"needs {total / 1e6:.3g} MB more .* only 100 kB are free. Fix: .*cache_dir"
    with pytest.raises(ConfigError, match=refusal):
        run.execute(cfg)
    out = capsys.readouterr().out
    assert f"activations [256, 4, 4] float16 = {per_image / 1e3:.3g} kB/image" in out
    assert f"this run uses {total / 1e6:.3g} MB (3 entries)" in out and "(100 kB free)" in out
    assert not list(cache_dir.glob("*.pt"))  # nothing written


@pytest.mark.slow
def test_bf16_runs_both_engines_on_cpu(tiny_cfg, cache_dir):
    """precision=bf16 is the CUDA fast path's arithmetic, selectable on the CPU: both engines run it,
    it really changes the features (bf16 rounding), and stays close to fp32."""
    cfg = tiny_cfg(cache_dir=str(cache_dir), max_identities=3, epochs=1)
    fp32 = pipeline.prepare(cfg).engine.eval_features("test")
    results = {}
    for engine in ("cached", "reference"):
        bf16_cfg = cfg.replace(engine=engine, precision="bf16")
        feats = pipeline.prepare(bf16_cfg).engine.eval_features("test")
        assert not torch.equal(feats, fp32)
        assert torch.nn.functional.cosine_similarity(feats, fp32).min() > 0.99
        results[engine] = run.execute(bf16_cfg)
    assert {(e["device"], e["precision"]) for e in FeatureCache(cache_dir).entries()} == {("cpu", "fp32"),
                                                                                           ("cpu", "bf16")}
    # both engines train on bf16 features: close losses and test embeddings (not ranking metrics of a
    # tiny random model, which flip with the CPU's kernels)
    _assert_same_model(results["cached"], results["reference"], rel=2e-2, emb_atol=5e-2)
