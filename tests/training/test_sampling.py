"""Batch order: a seeded permutation, or m images per identity (PML's MPerClassSampler), the same
for both engines (a pure function of the items, seed and epoch)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import common_functions as c_f

from benchmark.config import ConfigError
from benchmark.training.sampling import batch_order


def test_batch_order_is_a_seeded_permutation():
    a = batch_order(10, 4, seed=0, epoch=1)
    assert [len(b) for b in a] == [4, 4, 2]
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    assert all(torch.equal(x, y) for x, y in zip(a, batch_order(10, 4, 0, 1)))
    assert not torch.equal(torch.cat(a), torch.cat(batch_order(10, 4, 0, 2)))
    assert not np.array_equal(torch.cat(a).numpy(), torch.cat(batch_order(10, 4, 1, 1)).numpy())


def test_m_per_class_batches():
    labels = np.repeat(np.arange(6), [2, 3, 5, 8, 4, 6])  # 28 items; class 0 has fewer than m
    pml_state = c_f.NUMPY_RANDOM
    batches = batch_order(len(labels), 8, seed=0, epoch=0, labels=labels, samples_per_class=4)
    assert c_f.NUMPY_RANDOM is pml_state  # PML's global generator is left as it was
    assert [len(b) for b in batches] == [8, 8, 8]  # 28 // 8 full batches
    for b in batches:
        counts = Counter(labels[b.numpy()].tolist())
        assert sorted(counts.values()) == [4, 4]  # two identities x 4 images each
    again = batch_order(len(labels), 8, seed=0, epoch=0, labels=labels, samples_per_class=4)
    assert all(torch.equal(x, y) for x, y in zip(batches, again))
    other = batch_order(len(labels), 8, seed=0, epoch=1, labels=labels, samples_per_class=4)
    assert not all(torch.equal(x, y) for x, y in zip(batches, other))
    # identities with >= m images are drawn without replacement inside a batch
    for b in batches:
        for lab, n in Counter(labels[b.numpy()].tolist()).items():
            if (labels == lab).sum() >= 4:
                assert len(set(b.numpy()[labels[b.numpy()] == lab])) == n


def test_m_per_class_that_cannot_fill_a_batch_is_an_error():
    labels = np.repeat(np.arange(3), 5)
    with pytest.raises(ConfigError, match=r"samples_per_class=2 x 3 training identities .* cannot fill batch_size=8"):
        batch_order(len(labels), 8, 0, 0, labels=labels, samples_per_class=2)
