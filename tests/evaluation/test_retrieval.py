"""benchmark.evaluation.retrieval.search: faiss and torch give the same canonical ranking (score descending,
ties to the lower gallery index), checked against an exact numpy ranking, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.evaluation import retrieval
from benchmark.evaluation.retrieval import search

faiss = pytest.importorskip("faiss")


def _exact(rng, n=150):
    """Few distinct small-integer vectors: scores exact in float32, large tie groups (> 16)."""
    return rng.integers(-1, 2, size=(n, 3)).astype(np.float32)


def _duplicates(rng, n=150):
    base = rng.normal(size=(30, 24)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    return base[rng.integers(0, 30, size=n)]


def _rounded(rng, n=150):
    x = rng.normal(size=(n, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (np.round(x * 4) / 4).astype(np.float32)


def _distinct(rng, n=150):
    x = rng.normal(size=(n, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


DATA = {"exact-ties": _exact, "duplicates": _duplicates, "rounded": _rounded, "distinct": _distinct}


def reference_search(q, g, k, exclude_self):
    # elementwise products (exact in float64) summed the same way for every pair: duplicate rows get
    # bit-identical scores, which a BLAS matmul does not promise
    s = (q.astype(np.float64)[:, None, :] * g.astype(np.float64)[None, :, :]).sum(-1)
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    idx = np.broadcast_to(np.arange(len(g)), s.shape)
    order = np.lexsort((idx, -s), axis=1)
    k = min(k, len(g) - int(exclude_self))
    return np.take_along_axis(s, order, 1)[:, :k], order[:, :k]


@pytest.mark.parametrize("kind", list(DATA))
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("k", [1, 5, 40, "n", "n+5"])
def test_backends_identical_and_canonical(kind, exclude_self, k):
    x = DATA[kind](np.random.default_rng(len(kind)))
    n = len(x) - int(exclude_self)
    k = {"n": n, "n+5": n + 5}.get(k, k)
    want_s, want_i = reference_search(x, x, k, exclude_self)
    f_s, f_i = search(x, x, k, exclude_self=exclude_self, backend="faiss")
    t_s, t_i = search(torch.from_numpy(x), torch.from_numpy(x), k, exclude_self=exclude_self, backend="torch")
    assert f_i.shape == t_i.shape == (len(x), min(k, n))
    np.testing.assert_array_equal(f_i, t_i)
    np.testing.assert_array_equal(f_i, want_i)
    np.testing.assert_allclose(f_s, want_s, atol=1e-5)
    np.testing.assert_allclose(t_s, want_s, atol=1e-5)
    if exclude_self:
        assert not (f_i == np.arange(len(x))[:, None]).any()


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_query_gallery_differ(backend):
    rng = np.random.default_rng(7)
    g = _exact(rng, 120)
    q = _exact(rng, 25)
    for k in (1, 3, 120):
        _, want = reference_search(q, g, k, False)
        np.testing.assert_array_equal(search(q, g, k, backend=backend)[1], want)


def test_self_tied_with_duplicates_is_still_excluded():
    # 40 copies of one vector: every query's own copy ties with 39 others
    x = np.tile(np.array([[0.6, 0.8]], np.float32), (40, 1))
    for backend in ("faiss", "torch"):
        _, idx = search(x, x, 5, exclude_self=True, backend=backend)
        expect = np.array([[j for j in range(40) if j != i][:5] for i in range(40)])
        np.testing.assert_array_equal(idx, expect)


def test_auto_backend_is_faiss_on_cpu(monkeypatch):
    calls = []
    real = faiss.IndexFlatIP
    monkeypatch.setattr(retrieval.faiss, "IndexFlatIP", lambda d: calls.append(d) or real(d))
    search(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 2)
    assert calls == [3]


def test_build_index_searches_like_search():
    x = _distinct(np.random.default_rng(0), 50)
    index = retrieval.build_index(x)
    assert index.ntotal == 50
    _, idx = index.search(x, 5)
    np.testing.assert_array_equal(idx, search(x, x, 5)[1])


def test_plain_lists_and_large_tie_group_at_k():
    # 30 identical items then 5 others: k=2 must give the two lowest other copies for every copy
    x = [[1.0, 0.0]] * 30 + [[0.0, 1.0]] * 5
    for backend in ("faiss", "torch"):
        _, idx = search(x, x, 2, exclude_self=True, backend=backend)
        assert idx[:3].tolist() == [[1, 2], [0, 2], [0, 1]]
        assert idx[29].tolist() == [0, 1] and idx[34].tolist() == [30, 31]
