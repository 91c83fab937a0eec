"""The streaming feature pass: every view of a run from one decode of each image, in batches, equal
to computing each view image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.features import decoders, extract as features
from benchmark.features.augment import random_resized_crop_flip
from benchmark.config import Config
from benchmark.models.backbones import build_backbone
from benchmark.features.views import decode, eval_view
from benchmark.pipeline import precision
from tiny_prep import make_prep


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 36), (36, 36), (50, 44), (36, 48), (44, 40), (38, 38), (60, 40)]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_one_pass_makes_every_view_decoding_each_image_once(folder, monkeypatch):
    cfg = Config(backbone="resnet18", weights="random", image_size=32, resize=36, eval_batch_size=3,
                 num_workers=2, device="cpu", tracking="none")
    backbone = build_backbone(cfg).eval()
    prep = make_prep(32, 36, mean=backbone.spec.mean, std=backbone.spec.std)
    decoded = []
    real = decoders.DECODERS["pil"]

    def counting(paths, device, pool):
        decoded.extend(paths)
        return real(paths, device, pool)

    monkeypatch.setitem(decoders.DECODERS, "pil", counting)
    train = np.array([1, 3, 4, 6])
    views = [features.Output(np.arange(len(folder)), lambda imgs, rows: torch.stack([eval_view(i, prep) for i in imgs])),
             features.Output(train, lambda imgs, rows: random_resized_crop_flip(imgs, 100 + rows, 32), "report view 0"),
             features.Output(train, lambda imgs, rows: random_resized_crop_flip(imgs, 200 + rows, 32), "report view 1")]
    assert features.describe(views) == "eval view + 2 report views"
    ev, v1, v2 = features.extract_views(backbone, folder, views, prep, cfg.eval_batch_size, cfg.num_workers, "test")
    assert sorted(decoded) == sorted(folder)  # each image decoded exactly once for all three views

    with torch.no_grad():
        want_eval = torch.cat([features.forward(backbone, eval_view(decode(p), prep)[None], prep) for p in folder])
        want_v1 = torch.cat([features.forward(backbone, random_resized_crop_flip([decode(folder[i])],
                                                                                  np.array([100 + r]), 32), prep)
                             for r, i in enumerate(train)])
    torch.testing.assert_close(ev, want_eval, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(v1, want_v1, rtol=1e-4, atol=1e-5)
    assert v1.shape == v2.shape == (4, want_eval.shape[1]) and not torch.allclose(v1, v2)


def test_precision_is_a_config_choice_and_the_reference_stays_fp32():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    cfg = Config(device="cpu", tracking="none")
    assert precision(cfg, cpu) == "fp32"
    assert precision(cfg, cuda) == "bf16"
    assert precision(cfg.replace(engine="reference"), cuda) == "fp32"  # the oracle
    assert precision(cfg.replace(precision="bf16"), cpu) == "bf16"
    assert precision(cfg.replace(precision="fp32"), cuda) == "fp32"
