"""Batch order of an epoch, shared by both engines so that they build the same batches.

Plain: a seeded permutation split into batches (the report's shuffled DataLoader).
``samples_per_class = m``: PML's MPerClassSampler (m images of each of batch_size / m identities per
batch, drawn with replacement for identities with fewer images), seeded per (seed, epoch), so that
pair and triplet losses see positives in every batch; an epoch has len // batch_size full batches.
With ``domain_balance`` (a two-domain training split): batches of the same shape, but each identity's
m images are drawn half from its photos, half from its renders (``_domain_balanced``, its own seeded
draw), so that every batch holds the photo-render pairs the competition retrieves across.
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


def one_domain(labels: np.ndarray, render: np.ndarray) -> list:
    """The identities (values of ``labels``) whose images are all of one domain (``render``: per item):
    ``domain_balance`` draws their batches from that domain alone."""
    return sorted(set(labels) - (set(labels[render]) & set(labels[~render])))


def _domain_balanced(labels: np.ndarray, render: np.ndarray, m: int, batch_size: int,
                     rng: np.random.Generator) -> np.ndarray:
    """The items of ``len // batch_size`` batches of batch_size / m identities (drawn without
    replacement per batch, as MPerClassSampler does) x m images: ceil(m / 2) photos and m // 2 renders.
    A domain with fewer images than its share gives what it has and the other fills the rest, so that no
    image repeats in a batch unless its identity has fewer than m (then drawn with replacement, as
    MPerClassSampler does); an identity of one domain draws all m from it."""
    classes = np.unique(labels)
    pools = [(np.flatnonzero((labels == c) & ~render), np.flatnonzero((labels == c) & render)) for c in classes]

    def draw(pool: np.ndarray, k: int) -> np.ndarray:
        return rng.choice(pool, k, replace=k > len(pool))

    out = []
    for _ in range(len(labels) // batch_size):
        for photos, renders in (pools[k] for k in rng.permutation(len(classes))[: batch_size // m]):
            if len(photos) and len(renders):  # the share within what each domain has, if it can
                n_photos = int(np.clip((m + 1) // 2, m - len(renders), len(photos)))
            else:
                n_photos = m if len(photos) else 0
            out += [draw(photos, n_photos), draw(renders, m - n_photos)]
    return np.concatenate(out)


def batch_order(n: int, batch_size: int, seed: int, epoch: int, labels: np.ndarray | None = None,
                samples_per_class: int = 0, render: np.ndarray | None = None) -> list[torch.Tensor]:
    """Index batches of epoch ``epoch`` over ``n`` training items (``labels``: their classes; ``render``:
    which are renders, for domain-balanced batches)."""
    if not samples_per_class:
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        return list(torch.randperm(n, generator=g).split(batch_size))
    n_classes = len(np.unique(labels))
    if samples_per_class * n_classes < batch_size or n < batch_size:
        raise ConfigError(f"samples_per_class={samples_per_class} x {n_classes} training identities "
                          f"(with {n} images) cannot fill batch_size={batch_size}; lower batch_size "
                          "(benchmark.splits.check_sampling refuses such configs before any work)")
    if render is not None:
        order = _domain_balanced(np.asarray(labels), np.asarray(render, dtype=bool), samples_per_class, batch_size,
                                 np.random.default_rng(seed * 1000 + epoch))
    else:
        from pytorch_metric_learning.samplers import MPerClassSampler

        sampler = MPerClassSampler(np.asarray(labels), samples_per_class, batch_size=batch_size,
                                   length_before_new_iter=n)
        with _pml_random(seed * 1000 + epoch):
            order = list(iter(sampler))
    return list(torch.as_tensor(order, dtype=torch.int64).split(batch_size))
