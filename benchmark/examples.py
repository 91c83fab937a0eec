"""Retrieval examples (a query and its top-k, correct ones marked) for W&B tables and Figure 6."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from benchmark.evaluation.retrieval import search

CORRECT, WRONG = (40, 160, 60), (200, 40, 40)


def top_k(embeddings: np.ndarray, labels: np.ndarray, queries: list[int], k: int = 10,
          sides: np.ndarray | None = None):
    """For each query index: [(gallery index, correct)] best first: leave-one-out in the split, or
    with ``sides`` (a query -> gallery split's ``query``/``gallery`` per item) its gallery side only."""
    if sides is None:
        _, idx = search(embeddings, embeddings, k + 1, exclude_self=False)
        return [[(i, bool(labels[i] == labels[q])) for i in [int(i) for i in idx[q] if i != q][:k]] for q in queries]
    gallery = np.flatnonzero(np.asarray(sides) == "gallery")
    _, idx = search(embeddings[queries], embeddings[gallery], k)
    return [[(int(gallery[i]), bool(labels[gallery[i]] == labels[q])) for i in row if i >= 0]
            for q, row in zip(queries, idx)]


def pick_queries(labels: np.ndarray, n: int, seed: int = 0, sides: np.ndarray | None = None) -> list[int]:
    """``n`` queries from distinct identities, reproducibly (from the query side, given ``sides``)."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(labels)) if sides is None else np.flatnonzero(np.asarray(sides) == "query")
    firsts = [int(pool[labels[pool] == lab][0]) for lab in rng.permutation(np.unique(labels[pool]))[:n]]
    return sorted(firsts)


def thumbnail(path: str, correct: bool | None = None, size: int = 96, style: str | None = None) -> Image.Image:
    """A square thumbnail, rendered in ``style`` (a ``styles.tag``: what the backbone saw) if given; a
    green (correct) or red (wrong) border when ``correct`` is given."""
    with Image.open(path) as im:
        img = im.convert("RGB")
    if style is not None:
        from benchmark.features import styles

        img = Image.fromarray(styles.render_array(np.asarray(img), *styles.parse(style)))
    img = ImageOps.fit(img, (size, size))
    if correct is None:
        return img
    return ImageOps.expand(img.resize((size - 8, size - 8)), border=4, fill=CORRECT if correct else WRONG)
