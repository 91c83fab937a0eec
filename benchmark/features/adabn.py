"""Test-time AdaBN (config ``adabn: true``, issue 26 item 4): a transductive remedy for a domain gap.

Before the eval features of one domain's images are extracted, a copy of the frozen network has its
BatchNorm running statistics re-estimated on exactly those images: ``reset_running_stats()``,
``momentum=None`` (a cumulative average over the batches), train-mode forward passes of their eval views
without gradients, in batches of ``BATCH`` images (in the images' order: a fixed size, so that
``eval_batch_size`` keeps having no effect on results). Only the BatchNorm layers
run in train mode: dropout and stochastic depth stay off, so nothing but the statistics changes. The
copy then extracts those images' eval views (and mirrors, ``tta: flip``) in eval mode. The shared
network is never touched.

A domain is one side of one evaluated split (``groups``): a split's queries (photos) and its gallery
(renders) each get their own statistics, and no split's images shape another's features (validation
stays blind to the test images). ``engines.image_features`` (a submission's query or gallery folder)
adapts to the folder's images. Training images keep the backbone's statistics.

The adapted features are cache entries of their own: ``Preprocessing.adabn`` names the re-estimation
(``batch=N``) and the key's ``images`` are the adapted images themselves, so they are never served from
the plain entry and two image sets never share one.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

#: rows never adapted: the training images keep the backbone's statistics
NOT_ADAPTED = ("train",)
#: images per train-mode pass of the statistics (their cumulative average is over these batches)
BATCH = 64


def identity(batch_size: int = BATCH) -> str:
    """``Preprocessing.adabn`` of entries whose statistics were re-estimated in batches of ``batch_size``."""
    return f"batch={batch_size}"


def groups(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The adaptation domains of a table: ``{"test/gallery": rows, ...}``, each evaluated split's queries
    and gallery (``side``); without sides (a submission's folder) each split's images are one domain."""
    split = df["split"].to_numpy()
    side = df["side"].to_numpy() if "side" in df else None
    out = {}
    for name in dict.fromkeys(split):
        if name in NOT_ADAPTED:
            continue
        if side is None:
            out[str(name)] = np.flatnonzero(split == name)
            continue
        for which in ("query", "gallery"):
            rows = np.flatnonzero((split == name) & (side == which))
            if len(rows):
                out[f"{name}/{which}"] = rows
    return out


def batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class Adapting(nn.Module):
    """A copy of a frozen network whose BatchNorm statistics are re-estimated (``estimating``) and then used
    (``done``); what ``extract.forward`` takes (``device``, no gradients)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.norms = batchnorms(self.net)
        if not self.norms:
            raise ValueError("adabn: the network has no BatchNorm layer")
        for m in self.norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes
            m.train()  # only the BatchNorm layers: dropout / stochastic depth stay off

    @property
    def device(self) -> torch.device:
        return next(iter([*self.parameters(), *self.buffers()])).device

    def done(self) -> Adapting:
        """Eval mode everywhere: features with the re-estimated statistics."""
        self.net.eval()
        return self

    def train(self, mode: bool = True):  # only ``__init__`` and ``done`` set the modes
        return self

    @torch.no_grad()
    def forward(self, x):
        return self.net(x)
