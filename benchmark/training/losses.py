"""Losses and miners built from a config (the registries and their declared hyperparameters:
``benchmark.training.registry``).

Every loss is called as ``loss(embeddings, classes, indices_tuple)`` on the head's L2-normalized
embeddings; ``indices_tuple`` is the miner's output (None without a miner). Losses with their own
weights (the classifier of ``ce``, the class centres of the ArcFace family) are modules whose
parameters train with the head.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.config import Config, ConfigError
from benchmark.training.registry import LOSSES, MINERS, parameters


def _construct(cls: type, args: dict, given: dict | None = None) -> nn.Module:
    """``cls`` built with ``args`` (checked by ``check_domains`` when the config was made) and
    whichever of ``given`` it accepts."""
    accepted = parameters(cls)
    return cls(**{k: v for k, v in (given or {}).items() if k in accepted}, **args)


def build_loss(cfg: Config, n_classes: int) -> nn.Module:
    """The loss of ``cfg`` with ``loss_args``."""
    return _construct(LOSSES[cfg.loss], cfg.loss_args, {"num_classes": n_classes, "embedding_size": cfg.embedding_dim})


def build_miner(cfg: Config) -> nn.Module | None:
    """The miner of ``cfg`` with ``miner_args`` (None for ``miner=none``)."""
    if cfg.loss == "ce" and cfg.miner != "none":
        raise ConfigError(f"miner={cfg.miner} has no effect with loss=ce (a classifier sees no pairs); "
                          "use a metric-learning loss (e.g. loss=multi_similarity) or miner=none")
    cls = MINERS[cfg.miner]
    if cls is None:
        if cfg.miner_args:
            raise ConfigError("miner_args has no effect with miner=none; choose a miner or drop miner_args")
        return None
    return _construct(cls, cfg.miner_args)


def check(cfg: Config) -> None:
    """Fail before any feature is computed when ``loss_args``, the miner or ``miner_args`` do not fit."""
    build_loss(cfg, n_classes=2)
    build_miner(cfg)


def compute(loss: nn.Module, miner: nn.Module | None, embeddings: torch.Tensor,
            classes: torch.Tensor) -> torch.Tensor:
    return loss(embeddings, classes, miner(embeddings, classes) if miner is not None else None)
