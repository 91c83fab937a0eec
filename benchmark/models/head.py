"""The trained part (report sections 1.2, 2.3): projection to 512-d and L2 normalization, after the
backbone's trainable blocks when ``trainable_blocks`` > 0. The loss's own weights (e.g. the
classifier of cross-entropy) live in ``benchmark.training.losses``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """features -> dropout -> Linear(dim, 512) -> L2 normalize: the retrieval embedding."""

    def __init__(self, in_dim: int, out_dim: int = 512, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return F.normalize(self.proj(self.dropout(x)), dim=1)


class Embedder(nn.Module):
    """Trainable backbone blocks + projection head: boundary activations -> retrieval embedding.
    Outside training it runs in chunks of ``chunk`` items, so that evaluating a whole split of
    boundary activations (e.g. ViT tokens) stays within memory."""

    def __init__(self, trunk: nn.Module, head: ProjectionHead, chunk: int = 64):
        super().__init__()
        self.trunk, self.head, self.chunk = trunk, head, chunk

    def forward(self, x):
        if self.training:
            return self.head(self.trunk(x))
        return torch.cat([self.head(self.trunk(c)) for c in x.split(self.chunk)])


def embed(head: nn.Module | None, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Embeddings for retrieval: the head's output, or the L2-normalized features when ``head`` is None."""
    if head is None:
        return F.normalize(features.float(), dim=1)
    head.eval()
    with torch.no_grad():
        return torch.cat([head(features[i:i + batch_size].float())
                          for i in range(0, len(features), batch_size)])
