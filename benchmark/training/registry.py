"""The loss and miner registries (config ``loss``/``loss_args``, ``miner``/``miner_args``): plain dicts
over pytorch-metric-learning (PML) classes, plus today's cross-entropy classifier, with each
hyperparameter's declared domain. A declaration module: config validation imports it (for a config
that sets loss or miner arguments), so it imports nothing of the pipeline; ``losses`` builds them.
The names are listed again in ``benchmark.config`` (``LOSS_NAMES``/``MINER_NAMES``: the config's
choices, known without importing torch); a test holds the two equal.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from torch import nn

from benchmark.params import Param, check_args


class CrossEntropy(nn.Module):
    """Today's recipe (report section 2.3): a linear classifier over the training identities +
    cross-entropy. Mined pairs have no meaning for it and are ignored."""

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        self.classifier = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings, labels, indices_tuple=None):
        return F.cross_entropy(self.classifier(embeddings), labels)


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropy,
    "arcface": losses.ArcFaceLoss,
    "cosface": losses.CosFaceLoss,
    "subcenter_arcface": losses.SubCenterArcFaceLoss,
    "supcon": losses.SupConLoss,
    "triplet": losses.TripletMarginLoss,
    "multi_similarity": losses.MultiSimilarityLoss,
    "contrastive": losses.ContrastiveLoss,
}
MINERS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "batch_hard": miners.BatchHardMiner,
    "batch_easy_hard": miners.BatchEasyHardMiner,
    "multi_similarity": miners.MultiSimilarityMiner,
    "triplet_margin": miners.TripletMarginMiner,
    "pair_margin": miners.PairMarginMiner,
}
#: filled in from the run, never from loss_args
_GIVEN = ("num_classes", "embedding_size")


#: PML plumbing shared by all losses (reducers, distances, regularizer mixins), not hyperparameters
_GENERIC_MODULES = ("base_metric_loss_function", "generic_pair_loss", "mixins", "module_with_records",
                    "module_with_records_and_reducer", "base_miner")


def parameters(cls: type) -> dict[str, object]:
    """The hyperparameters a loss class takes by name, with defaults: its own and its PML parents'
    (CosFace passes ``*args`` on to LargeMarginSoftmax), without PML's generic plumbing."""
    out: dict[str, object] = {}
    for klass in cls.__mro__:
        if (not issubclass(klass, nn.Module) or klass is nn.Module or "__init__" not in vars(klass)
                or klass.__module__.rsplit(".", 1)[-1] in _GENERIC_MODULES):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(p.name, p.default)
    return out


def pair_based(loss: str) -> bool:
    """Whether ``loss`` compares embeddings in pairs or triplets (so that which positives count means
    something), as opposed to a classifier over the training identities (``ce``, the ArcFace family:
    they are the losses given ``num_classes``)."""
    return "num_classes" not in parameters(LOSSES[loss])


_STRATEGIES = ("easy", "semihard", "hard", "all")
#: the domain of each PML hyperparameter, by name (shared by the losses and miners that take it); a
#: name not listed (e.g. ``allowed_pos_range``) is passed on as given, for PML's own checks
DOMAINS = {"margin": Param(float, low=0), "scale": Param(float, low=0, open_low=True),
           "sub_centers": Param(int, low=1), "temperature": Param(float, low=0, open_low=True),
           "swap": Param(bool), "smooth_loss": Param(bool), "alpha": Param(float, low=0, open_low=True),
           "beta": Param(float, low=0, open_low=True), "base": Param(float, low=-1, high=1),
           "pos_margin": Param(float, low=0), "neg_margin": Param(float, low=0), "epsilon": Param(float, low=0),
           "pos_strategy": Param(str, choices=_STRATEGIES), "neg_strategy": Param(str, choices=_STRATEGIES),
           "type_of_triplets": Param(str, choices=("all", "hard", "semihard", "easy"))}


def declared(cls: type) -> dict[str, Param]:
    """The tunable hyperparameters of a loss or miner class: names and defaults from its signature
    (``parameters``), domains from ``DOMAINS``."""
    return {name: dataclasses.replace(DOMAINS.get(name, Param(object)), default=default)
            for name, default in parameters(cls).items() if name not in _GIVEN}


def check_domains(loss: str, loss_args: dict, miner: str, miner_args: dict) -> None:
    """``loss_args`` and ``miner_args`` against the declared hyperparameters of the loss and miner
    (names and values): what config validation runs. Rules between keys (a miner with ``ce``) stay
    with ``losses.build_miner``: a sweep file's parameters are checked one at a time."""
    check_args("loss_args", f"loss={loss} ({LOSSES[loss].__name__})", declared(LOSSES[loss]), loss_args)
    if MINERS[miner] is not None:
        check_args("miner_args", f"miner={miner} ({MINERS[miner].__name__})", declared(MINERS[miner]), miner_args)
