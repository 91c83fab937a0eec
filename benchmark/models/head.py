"""The trained part (report sections 1.2, 2.3): projection to 512-d, L2 normalization, and a linear
classifier over the training identities that is discarded after training."""

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


class HeadClassifier(nn.Module):
    """Projection head + identity classifier, trained with cross-entropy."""

    def __init__(self, in_dim: int, n_classes: int, out_dim: int = 512, dropout: float = 0.0):
        super().__init__()
        self.head = ProjectionHead(in_dim, out_dim, dropout)
        self.classifier = nn.Linear(out_dim, n_classes)

    def forward(self, x):
        return self.classifier(self.head(x))


def embed(head: nn.Module | None, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Embeddings for retrieval: the head's output, or the L2-normalized features when ``head`` is None."""
    if head is None:
        return F.normalize(features.float(), dim=1)
    head.eval()
    with torch.no_grad():
        return torch.cat([head(features[i:i + batch_size].float())
                          for i in range(0, len(features), batch_size)])
