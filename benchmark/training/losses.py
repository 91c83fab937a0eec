"""Losses and miners built from a config (the registries and their declared hyperparameters:
``benchmark.training.registry``).

Every loss is called as ``loss(embeddings, classes, indices_tuple)`` on the head's L2-normalized
embeddings; ``indices_tuple`` is the miner's output (None without a miner). Losses with their own
weights (the classifier of ``ce``, the class centres of the ArcFace family) are modules whose
parameters train with the head. ``positives=cross_domain`` filters the tuples a pair-based loss gets
(``cross_domain``) rather than changing any loss: PML's losses take either pairs or triplets and
convert them to what they use.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from benchmark.config import Config, ConfigError
from benchmark.training.registry import LOSSES, MINERS, pair_based, parameters


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
    if cfg.positives == "cross_domain" and not pair_based(cfg.loss):
        raise ConfigError(f"positives=cross_domain has no effect with loss={cfg.loss} (a classifier over identities "
                          "sees no pairs); use a pair-based loss (e.g. loss=multi_similarity) or positives=all")
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


def cross_domain(indices_tuple: tuple[torch.Tensor, ...], render: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``indices_tuple`` (pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)``, PML's two forms) without the
    positive pairs whose two items are of one domain (``render``: per batch item); negatives as given."""
    keep = render[indices_tuple[0]] != render[indices_tuple[1]]
    if len(indices_tuple) == 3:
        return tuple(t[keep] for t in indices_tuple)
    a1, p, a2, n = indices_tuple
    return a1[keep], p[keep], a2, n


def every_tuple(loss: nn.Module, classes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What ``loss`` uses without a miner, made explicit so that it can be filtered: the triplet loss's
    own triplets (given pairs instead, PML would match every positive pair with every negative one: far
    larger), every pair for the others."""
    if isinstance(loss, pml_losses.TripletMarginLoss):
        return lmu.convert_to_triplets(None, classes, t_per_anchor=loss.triplets_per_anchor)
    return lmu.get_all_pairs_indices(classes)


def compute(loss: nn.Module, miner: nn.Module | None, embeddings: torch.Tensor, classes: torch.Tensor,
            render: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of one batch on the miner's tuples; given ``render`` (which items are renders:
    ``positives=cross_domain``), only their positive pairs that cross domains count."""
    indices = miner(embeddings, classes) if miner is not None else None
    if render is not None:
        indices = cross_domain(indices if indices is not None else every_tuple(loss, classes), render)
    return loss(embeddings, classes, indices)
