"""Optimizers and learning-rate schedules (config ``optimizer``, ``weight_decay``, ``scheduler``,
``warmup_epochs``) over ``torch.optim``. Schedules step once per batch, so that short runs (3
epochs) still follow the curve."""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from benchmark.config import Config

#: SGD's momentum (the usual fine-tuning value)
MOMENTUM = 0.9
#: warm-up starts at lr x WARMUP_START
WARMUP_START = 0.01


def build_optimizer(cfg: Config, groups: list[dict]) -> torch.optim.Optimizer:
    """``groups``: torch parameter groups; those without an ``lr`` use ``cfg.lr``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=MOMENTUM, nesterov=True,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: Config, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """The per-batch schedule of ``cfg``, or None for a constant learning rate."""
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":  # its rising phase is the warm-up
        return lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
                                       pct_start=warmup / total if warmup else 0.3)
    rest = total - warmup
    main = {"none": None,
            "cosine": lambda: lr_scheduler.CosineAnnealingLR(opt, T_max=rest),
            "step": lambda: lr_scheduler.MultiStepLR(opt, milestones=[rest // 2, rest * 3 // 4], gamma=0.1),
            }[cfg.scheduler]
    if not warmup:
        return main and main()
    ramp = lr_scheduler.LinearLR(opt, start_factor=WARMUP_START, total_iters=warmup)
    after = main() if main else lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return lr_scheduler.SequentialLR(opt, [ramp, after], milestones=[warmup])
