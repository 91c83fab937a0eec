"""Optimizers and per-batch learning-rate schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.config import Config, ConfigError
from benchmark.training.optim import MOMENTUM, WARMUP_START, build_optimizer, build_scheduler


def _lrs(cfg: Config, steps_per_epoch: int) -> list[float]:
    opt = build_optimizer(cfg, [{"params": [torch.nn.Parameter(torch.zeros(1))]}])
    sched = build_scheduler(cfg, opt, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_no_scheduler_is_a_constant_lr():
    assert _lrs(Config(lr=0.01), 4) == [0.01] * 12


def test_cosine_with_warmup():
    cfg = Config(lr=0.1, epochs=4, scheduler="cosine", warmup_epochs=1)
    got = _lrs(cfg, 5)
    ramp = [0.1 * (WARMUP_START + (1 - WARMUP_START) * t / 5) for t in range(5)]
    cosine = [0.05 * (1 + math.cos(math.pi * t / 15)) for t in range(15)]
    assert got == pytest.approx(ramp + cosine, rel=1e-9, abs=1e-12)


def test_step_and_onecycle():
    got = _lrs(Config(lr=1.0, epochs=4, scheduler="step"), 2)  # 8 steps: x0.1 at 4 and 6
    assert got == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    got = _lrs(Config(lr=1.0, epochs=5, scheduler="onecycle", warmup_epochs=1), 4)
    assert max(got) == pytest.approx(1.0) and got.index(max(got)) == 3  # peak ends the warm-up (torch: step pct*total-1)
    assert got[0] == pytest.approx(1.0 / 25) and got[-1] < 1e-3  # torch's OneCycle: lr/25 -> ~0


def test_optimizers_and_groups():
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    cfg = Config(lr=0.1, optimizer="sgd", weight_decay=1e-4, trainable_blocks=1)
    opt = build_optimizer(cfg, [{"params": [p]}, {"params": [q], "lr": cfg.backbone_learning_rate}])
    assert isinstance(opt, torch.optim.SGD)
    g0, g1 = opt.param_groups
    assert (g0["lr"], g1["lr"], g0["momentum"], g0["nesterov"], g0["weight_decay"]) == \
        (0.1, pytest.approx(0.01), MOMENTUM, True, 1e-4)
    assert type(build_optimizer(cfg.replace(optimizer="adamw"), [{"params": [p]}])) is torch.optim.AdamW
    assert type(build_optimizer(Config(), [{"params": [p]}])) is torch.optim.Adam
    assert Config(lr=0.1, backbone_lr=0.003).backbone_learning_rate == 0.003


@pytest.mark.parametrize("overrides, match", [
    ({"warmup_epochs": 3, "epochs": 3}, "warmup_epochs=3 must be < epochs=3"),
    ({"samples_per_class": 5}, "samples_per_class=5 must divide batch_size=32"),
    ({"scheduler": "linear"}, "choose one of: none, cosine, step, onecycle"),
    ({"weight_decay": -1}, "weight_decay=-1"),
    ({"trainable_blocks": -1}, r"trainable_blocks=-1 is not valid: must be an integer in \[0, inf\)"),
])
def test_bad_recipe_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        Config(**overrides)
