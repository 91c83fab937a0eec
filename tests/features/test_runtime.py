"""``runtime``: ONNX Runtime for the frozen pass where its export verifies, torch otherwise — the same
features (to 1e-4) and the same rankings; a broken or unverifiable export falls back to torch with one
logged line, never a wrong feature."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import torch

from benchmark import pipeline
from benchmark.config import Config, ConfigError
from benchmark.features import runtime
from benchmark.features.cache import FeatureCache
from benchmark.models import backbones
from benchmark.evaluation.retrieval import search

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def fresh_process():
    """Each test sees the export verdicts of a new process (the export files stay on disk)."""
    runtime._VERDICTS.clear()
    runtime._NETWORKS.clear()
    yield
    runtime._VERDICTS.clear()
    runtime._NETWORKS.clear()


def _orl(cache_dir, **kw) -> Config:
    if backbones.availability("efficientnet_lite0"):
        pytest.skip(backbones.availability("efficientnet_lite0"))
    base = dict(experiment="rt", dataset="orl", max_identities=10, min_faces_per_person=5,
                backbone="efficientnet_lite0", image_size=96, resize=110, embedding="backbone", tracking="none",
                device="cpu", num_workers=0, cache_dir=str(cache_dir))
    return Config(**{**base, **kw})


def _features(cfg: Config):
    prep = pipeline.prepare(cfg)
    return prep.engine.prep, prep.engine.eval_features("test"), prep


@pytest.mark.slow
def test_onnxruntime_features_equal_torch_and_rank_identically(cache_dir):
    ort_prep, ort, _ = _features(_orl(cache_dir, runtime="onnxruntime"))
    torch_prep, ref, prep = _features(_orl(cache_dir, runtime="torch"))
    assert (ort_prep.runtime, torch_prep.runtime) == ("onnxruntime", "torch")
    assert (ort - ref).abs().max() <= runtime.TOLERANCE and not torch.equal(ort, ref)  # really another runtime
    unit = lambda x: torch.nn.functional.normalize(x, dim=1).numpy()  # noqa: E731
    _, want = search(unit(ref), unit(ref), 10)
    _, got = search(unit(ort), unit(ort), 10)
    np.testing.assert_array_equal(got, want)
    # the runtime is part of the key: two entries, each saying which runtime made it
    assert sorted(e["runtime"] for e in FeatureCache(cache_dir).entries() if "runtime" in e) == \
        ["onnxruntime", "torch"]
    # auto on the CPU in fp32 is ONNX Runtime, and reads the same entry
    auto_prep, auto, _ = _features(_orl(cache_dir))
    assert auto_prep == ort_prep and torch.equal(auto, ort)


@pytest.mark.slow
def test_the_export_is_made_once_per_network_and_stored_in_the_cache(cache_dir, monkeypatch):
    calls = []
    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: calls.append(1) or real(*a, **k))
    _features(_orl(cache_dir))
    runtime._VERDICTS.clear()  # another process on the same cache folder
    runtime._NETWORKS.clear()
    _features(_orl(cache_dir, normalize=False))  # other preprocessing, same network and input size
    assert len(calls) == 1 and len(list((cache_dir / "onnx").glob("*.onnx"))) == 1
    _features(_orl(cache_dir, image_size=64, resize=72))  # another input size: its own export
    assert len(calls) == 2 and len(list((cache_dir / "onnx").glob("*.onnx"))) == 2


@pytest.mark.slow
def test_a_damaged_export_file_is_made_anew(cache_dir):
    _features(_orl(cache_dir))
    (export,) = (cache_dir / "onnx").glob("*.onnx")
    export.write_bytes(b"not an onnx graph")  # e.g. a truncated copy of the cache folder
    runtime._VERDICTS.clear()
    runtime._NETWORKS.clear()
    prep, feats, _ = _features(_orl(cache_dir, normalize=False))
    assert prep.runtime == "onnxruntime" and export.stat().st_size > 1000
    _, ref, _ = _features(_orl(cache_dir, normalize=False, runtime="torch"))
    assert (feats - ref).abs().max() <= runtime.TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["export", "verification"])
def test_a_broken_or_unverified_export_falls_back_to_torch_logged_once(cache_dir, monkeypatch, caplog, fault):
    if fault == "export":
        def broken(*args, **kwargs):
            raise RuntimeError("Exporting the operator 'aten::weird_op' to ONNX opset version 17 is not supported")
        monkeypatch.setattr(torch.onnx, "export", broken)
    else:
        real = runtime.OrtNetwork.forward
        monkeypatch.setattr(runtime.OrtNetwork, "forward", lambda self, x: real(self, x) + 1e-3)
    with caplog.at_level(logging.WARNING, logger="benchmark.features.runtime"):
        prep, feats, _ = _features(_orl(cache_dir, runtime="onnxruntime"))
        again, _, _ = _features(_orl(cache_dir, runtime="onnxruntime", seed=1))
    assert prep.runtime == again.runtime == "torch"
    lines = [r.getMessage() for r in caplog.records if r.name == "benchmark.features.runtime"]
    assert len(lines) == 1 and "backbone=efficientnet_lite0" in lines[0] and "using torch" in lines[0]
    assert ("aten::weird_op" if fault == "export" else "differ from torch's by up to 0.001") in lines[0]
    _, ref, _ = _features(_orl(cache_dir, runtime="torch"))
    assert torch.equal(feats, ref)  # the fallback's features are torch's, under torch's key


def test_resolution_rules(cache_dir):
    cfg = _orl(cache_dir)
    device = torch.device("cpu")
    frozen = pipeline.frozen_backbone(cfg, device)
    cache = FeatureCache(cache_dir)

    def resolved(**kw):
        return pipeline.feature_spec(cfg.replace(**kw), frozen, device, cache)[0].runtime

    assert resolved() == "onnxruntime"
    assert resolved(runtime="torch") == "torch"
    assert resolved(precision="bf16") == "torch"  # ONNX Runtime computes fp32
    assert resolved(engine="reference") == "torch"  # the oracle
    with pytest.raises(ConfigError, match="runtime=onnxruntime needs engine=cached"):
        cfg.replace(runtime="onnxruntime", engine="reference")
    with pytest.raises(ConfigError, match="runtime=onnxruntime computes in fp32"):
        cfg.replace(runtime="onnxruntime", precision="bf16")
    # SFace's bar and `cache ls` said runtime torch though OpenCV runs it: what runs it is the label
    for name, label in (("sface", "opencv-dnn"), ("dlib", "dlib"), ("ensemble", "members")):
        spec = backbones.check_backbone(name)
        assert spec.runtime == label
        assert runtime.resolve("onnxruntime", types.SimpleNamespace(spec=spec), None, cache_dir) == label


@pytest.mark.slow
def test_boundary_activations_through_onnxruntime_equal_torch(cache_dir):
    """trainable_blocks: the frozen part up to the boundary is exported; the blocks train in torch."""
    kw = dict(trainable_blocks=1, embedding="head", augment="none", epochs=1)
    ort_prep, ort, _ = _features(_orl(cache_dir, runtime="onnxruntime", boundary_dtype="float32", **kw))
    _, ref, _ = _features(_orl(cache_dir, runtime="torch", boundary_dtype="float32", **kw))
    assert ort_prep.runtime == "onnxruntime" and ort.shape == ref.shape and ort.ndim == 4
    assert (ort - ref).abs().max() <= runtime.TOLERANCE


@pytest.mark.slow
def test_a_damaged_but_loadable_export_is_made_anew_and_a_real_verdict_is_remembered(cache_dir, monkeypatch):
    """Issue 23: an export that loads but computes other features (a stale or tampered file) was kept
    forever, every later run on torch; and a read-only cache folder ignored a valid export."""
    import os
    import stat

    _features(_orl(cache_dir))
    (export,) = (cache_dir / "onnx").glob("*.onnx")
    good = export.read_bytes()
    other = _orl(cache_dir, backbone="resnet18", weights="random")  # a loadable graph of another network
    _features(other.replace(runtime="onnxruntime"))
    (stranger,) = set((cache_dir / "onnx").glob("*.onnx")) - {export}
    export.write_bytes(stranger.read_bytes())
    runtime._VERDICTS.clear()
    runtime._NETWORKS.clear()
    prep, _, _ = _features(_orl(cache_dir, normalize=False))
    assert prep.runtime == "onnxruntime" and export.read_bytes() == good  # made anew, verified
    assert not list((cache_dir / "onnx").glob("*.unverified"))
    runtime._VERDICTS.clear()
    runtime._NETWORKS.clear()
    os.chmod(cache_dir / "onnx", stat.S_IRUSR | stat.S_IXUSR)  # read-only: the valid export still serves
    try:  # (root writes read-only folders anyway: then this only shows the export is reused)
        prep, _, _ = _features(_orl(cache_dir, seed=2))
        assert prep.runtime == "onnxruntime"
    finally:
        os.chmod(cache_dir / "onnx", stat.S_IRWXU)
    real = runtime.OrtNetwork.forward
    monkeypatch.setattr(runtime.OrtNetwork, "forward", lambda self, x: real(self, x) + 1e-3)
    runtime._VERDICTS.clear()
    runtime._NETWORKS.clear()
    assert _features(_orl(cache_dir, seed=3))[0].runtime == "torch"  # remade once, still off: the verdict
    (verdict,) = (cache_dir / "onnx").glob("*.unverified")
    assert "differ from torch's" in verdict.read_text()
    runtime._VERDICTS.clear()
    monkeypatch.setattr(runtime, "_export", lambda *a: pytest.fail("exported again despite the verdict"))
    assert _features(_orl(cache_dir, seed=4))[0].runtime == "torch"
