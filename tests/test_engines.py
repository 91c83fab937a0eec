"""The two engines agree (augmentation off), and the feature cache is reused, keyed and self-healing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import engines, run
from benchmark.cache import FeatureCache

SCORES = ("top1", "top5", "top10", "map", "score")


@pytest.fixture
def count_extract(monkeypatch):
    """Counts the cached engine's backbone passes (a cache hit makes none)."""
    calls = []
    real = engines.extract

    def counting(backbone, images, view, cfg, desc, *args):
        calls.append(desc)
        return real(backbone, images, view, cfg, desc, *args)

    monkeypatch.setattr(engines, "extract", counting)
    return calls


def test_cached_and_reference_engines_agree(tiny_cfg, cache_dir):
    cfg = tiny_cfg(cache_dir=str(cache_dir), lr=0.01)
    cached, h_cached, *_ = run.execute(cfg.replace(engine="cached"))
    ref, h_ref, *_ = run.execute(cfg.replace(engine="reference"))
    for split in ("val", "test"):
        assert cached[f"{split}/n_queries"] == ref[f"{split}/n_queries"] > 0
        for key in SCORES:
            assert cached[f"{split}/{key}"] == pytest.approx(ref[f"{split}/{key}"], rel=1e-4, abs=1e-6), \
                f"{split}/{key}"
    for key in ("nmi", "intra", "inter"):
        assert cached[f"test/{key}"] == pytest.approx(ref[f"test/{key}"], rel=1e-3, abs=1e-6), key
    assert len(h_cached) == len(h_ref) == cfg.epochs
    assert cached["best_epoch"] == ref["best_epoch"]
    for a, b in zip(h_cached, h_ref):
        assert a["epoch"] == b["epoch"]
        for key in ("train/loss", "val/loss", "val/score", "val/map"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["epoch"], key)
    # training really moved the head away from its initial loss, and not identically per epoch
    assert h_cached[0]["train/loss"] != h_cached[1]["train/loss"]


def test_engines_give_the_same_features_and_batches(tiny_cfg, cache_dir):
    cfg = tiny_cfg(cache_dir=str(cache_dir), max_identities=3)
    prep_c = run.prepare(cfg.replace(engine="cached"))
    prep_r = run.prepare(cfg.replace(engine="reference"))
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


def test_feature_cache_is_reused_and_heals(tiny_cfg, cache_dir, count_extract):
    cfg = tiny_cfg(cache_dir=str(cache_dir), augment=True, epochs=2, patience=0)
    first, *_ = run.execute(cfg)
    # one eval entry + one augmented view per epoch
    assert len(count_extract) == 3
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
    with open(victim, "r+b") as fh:
        fh.truncate(size // 2)
    count_extract.clear()
    third, *_ = run.execute(cfg)
    assert len(count_extract) == 1
    assert victim.stat().st_size == size
    assert not any(e.get("broken") for e in FeatureCache(cache_dir).entries())
    for key in [k for k in first if k.startswith(("val/", "test/"))]:
        assert third[key] == pytest.approx(first[key], rel=1e-5, abs=1e-7), key


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


def test_batch_order_is_a_seeded_permutation():
    a = engines.batch_order(10, 4, seed=0, epoch=1)
    assert [len(b) for b in a] == [4, 4, 2]
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    assert all(torch.equal(x, y) for x, y in zip(a, engines.batch_order(10, 4, 0, 1)))
    assert not torch.equal(torch.cat(a), torch.cat(engines.batch_order(10, 4, 0, 2)))
    assert not np.array_equal(torch.cat(a).numpy(), torch.cat(engines.batch_order(10, 4, 1, 1)).numpy())
