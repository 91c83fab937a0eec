"""Retrieval examples (a query and its top-k, correct ones marked) for W&B tables and Figure 6."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from benchmark.retrieval import search

CORRECT, WRONG = (40, 160, 60), (200, 40, 40)


def top_k(embeddings: np.ndarray, labels: np.ndarray, queries: list[int], k: int = 10):
    """For each query index: [(gallery index, correct)] best first (leave-one-out in the split)."""
    _, idx = search(embeddings, embeddings, k + 1, exclude_self=False)
    out = []
    for q in queries:
        ranked = [int(i) for i in idx[q] if i != q][:k]
        out.append([(i, bool(labels[i] == labels[q])) for i in ranked])
    return out


def pick_queries(labels: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """``n`` queries from distinct identities, reproducibly."""
    rng = np.random.default_rng(seed)
    firsts = [int(np.flatnonzero(labels == lab)[0]) for lab in rng.permutation(np.unique(labels))[:n]]
    return sorted(firsts)


def thumbnail(path: str, correct: bool | None = None, size: int = 96) -> Image.Image:
    """A square thumbnail; a green (correct) or red (wrong) border when ``correct`` is given."""
    with Image.open(path) as im:
        img = ImageOps.fit(im.convert("RGB"), (size, size))
    if correct is None:
        return img
    return ImageOps.expand(img.resize((size - 8, size - 8)), border=4, fill=CORRECT if correct else WRONG)
