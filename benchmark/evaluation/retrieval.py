"""Exact cosine search over L2-normalized embeddings: faiss ``IndexFlatIP`` when installed, exact
torch matmul + top-k otherwise. Both return the same canonical ranking: score descending, ties
broken by the lower gallery index."""

from __future__ import annotations

import numpy as np
import torch

try:
    import faiss
except ImportError:  # the GPU machine has no faiss; torch gives the same answer
    faiss = None

#: extra candidates fetched before the canonical re-sort, so ties at the k-th place resolve the same
_TIE_MARGIN = 16


def _canonical(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((idx, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)


def search(query, gallery, k: int, exclude_self: bool = False,
           backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery items per query: (scores, indices), each [n_query, k].

    ``exclude_self``: query i is gallery item i and never retrieves itself (leave-one-out).
    ``backend``: auto (faiss if installed) | faiss | torch.
    """
    if backend == "auto":
        backend = "faiss" if faiss is not None and not _on_cuda(query) else "torch"
    n = len(gallery) - int(exclude_self)
    k = min(k, n)
    fetch = min(n, k + _TIE_MARGIN)
    scores, idx = _candidates(query, gallery, fetch, exclude_self, backend)
    if fetch < n:
        # a tie group at the k-th place that reaches the last candidate may go on past it, with
        # lower gallery indices among the items not fetched: rank those rows over the whole gallery
        kth = _canonical(scores, idx, k)[0][:, -1]
        redo = np.flatnonzero(kth <= scores.min(1))
        if len(redo):
            sub = query[redo] if isinstance(query, torch.Tensor) else np.asarray(query)[redo]
            full = _candidates(sub, gallery, n, exclude_self, backend, rows=redo)
            scores, idx = _canonical(scores, idx, fetch)  # same shape for the patched rows
            scores[redo], idx[redo] = _canonical(*full, fetch)
    return _canonical(scores, idx, k)


def _candidates(query, gallery, fetch: int, exclude_self: bool, backend: str,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``fetch`` best gallery items per query (self left out when ``exclude_self``), unordered
    among ties. ``rows``: the queries' own gallery indices when ``query`` is a subset of rows."""
    self_idx = np.arange(len(query)) if rows is None else np.asarray(rows)
    if backend == "faiss":
        q = np.ascontiguousarray(_numpy(query), dtype=np.float32)
        g = np.ascontiguousarray(_numpy(gallery), dtype=np.float32)
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g)
        scores, idx = index.search(q, fetch + int(exclude_self))
        if exclude_self:
            keep = idx != self_idx[:, None]
            keep[keep.sum(1) > fetch, -1] = False  # self not among the candidates: drop the last
            scores = scores[keep].reshape(len(q), fetch)
            idx = idx[keep].reshape(len(q), fetch)
        return scores, idx
    q = torch.as_tensor(query).float()
    g = torch.as_tensor(gallery).float().to(q.device)
    sims = q @ g.T
    if exclude_self:
        sims[torch.arange(len(q), device=q.device), torch.as_tensor(self_idx, device=q.device)] = float("-inf")
    if fetch + int(exclude_self) >= sims.shape[1]:
        vals, ids = torch.sort(sims, dim=1, descending=True, stable=True)
        vals, ids = vals[:, :fetch], ids[:, :fetch]
    else:
        vals, ids = torch.topk(sims, fetch, dim=1)
    return vals.cpu().numpy(), ids.cpu().numpy()


def _on_cuda(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_cuda


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def build_index(gallery: np.ndarray):
    """A faiss ``IndexFlatIP`` over ``gallery`` (for saving with a submission); None without faiss."""
    if faiss is None:
        return None
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    return index
