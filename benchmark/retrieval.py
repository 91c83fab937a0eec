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
    fetch = min(n + int(exclude_self), k + _TIE_MARGIN + int(exclude_self))
    if backend == "faiss":
        q = np.ascontiguousarray(_numpy(query), dtype=np.float32)
        g = np.ascontiguousarray(_numpy(gallery), dtype=np.float32)
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g)
        scores, idx = index.search(q, fetch)
        if exclude_self:
            keep = idx != np.arange(len(q))[:, None]
            keep[keep.sum(1) > fetch - 1, -1] = False  # self not among the candidates: drop the last
            scores = scores[keep].reshape(len(q), fetch - 1)
            idx = idx[keep].reshape(len(q), fetch - 1)
    else:
        q = torch.as_tensor(query).float()
        g = torch.as_tensor(gallery).float().to(q.device)
        sims = q @ g.T
        if exclude_self:
            sims.fill_diagonal_(float("-inf"))
        fetch -= int(exclude_self)
        if fetch == sims.shape[1]:
            vals, ids = torch.sort(sims, dim=1, descending=True, stable=True)
        else:
            vals, ids = torch.topk(sims, fetch, dim=1)
        scores, idx = vals.cpu().numpy(), ids.cpu().numpy()
    return _canonical(scores, idx, k)


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
