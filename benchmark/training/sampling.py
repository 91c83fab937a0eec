"""Batch order of an epoch, shared by both engines so that they build the same batches.

Plain: a seeded permutation split into batches (the report's shuffled DataLoader).
``samples_per_class = m``: PML's MPerClassSampler (m images of each of batch_size / m identities per
batch, drawn with replacement for identities with fewer images), seeded per (seed, epoch), so that
pair and triplet losses see positives in every batch; an epoch has len // batch_size full batches.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from benchmark.config import ConfigError


@contextmanager
def _pml_random(seed: int):
    """PML's samplers draw from its module-wide NumPy RandomState: seed it for one epoch only."""
    from pytorch_metric_learning.utils import common_functions as c_f

    saved = c_f.NUMPY_RANDOM
    c_f.NUMPY_RANDOM = np.random.RandomState(seed)
    try:
        yield
    finally:
        c_f.NUMPY_RANDOM = saved


def batch_order(n: int, batch_size: int, seed: int, epoch: int, labels: np.ndarray | None = None,
                samples_per_class: int = 0) -> list[torch.Tensor]:
    """Index batches of epoch ``epoch`` over ``n`` training items (``labels``: their classes)."""
    if not samples_per_class:
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        return list(torch.randperm(n, generator=g).split(batch_size))
    from pytorch_metric_learning.samplers import MPerClassSampler

    n_classes = len(np.unique(labels))
    if samples_per_class * n_classes < batch_size or n < batch_size:
        raise ConfigError(f"samples_per_class={samples_per_class} x {n_classes} training identities "
                          f"(with {n} images) cannot fill batch_size={batch_size}; lower batch_size "
                          "(benchmark.splits.check_sampling refuses such configs before any work)")
    sampler = MPerClassSampler(np.asarray(labels), samples_per_class, batch_size=batch_size,
                               length_before_new_iter=n)
    with _pml_random(seed * 1000 + epoch):
        order = torch.as_tensor(list(iter(sampler)), dtype=torch.int64)
    return list(order.split(batch_size))
