"""The embedding network shared by every model: trunk -> global max pool -> LayerNorm -> Linear head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Embedder(nn.Module):
    """``features(x)`` (B, D) = LayerNorm(maxpool(trunk(x))); ``forward(x)`` (B, E) = ``head(features(x))``.

    ``trunk`` maps images (B, C, H, W) to feature maps (B, D, h, w). The LayerNorm has no affine
    parameters and the embeddings are not L2-normalised (the losses normalise internally), as in the
    reference code. Only ``head`` (W: (E, D), b: (E,)) is perturbed by EIF and IF.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, embedding_size: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = int(feature_dim)
        self.embedding_size = int(embedding_size)
        self.head = nn.Linear(self.feature_dim, self.embedding_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> LayerNorm'ed, max-pooled trunk features (B, D)."""
        maps = self.trunk(x)
        pooled = F.adaptive_max_pool2d(maps, 1).flatten(1)
        return F.layer_norm(pooled, (self.feature_dim,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> unnormalised embeddings (B, E)."""
        return self.head(self.features(x))

    def importable_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a ``model.checkpoint`` state dict this model loads (all of it here)."""
        return dict(state)
