"""A head on precomputed features (``dataset=features``): the trunk is the identity.

A feature vector of size D travels through eif as a D-channel 1x1 image (``FeatureSet`` items are
(D, 1, 1) tensors), so batching, the trainer and the feature cache work unchanged; the global max
pool of a 1x1 map is the vector itself. ``features(x)`` is the vector, LayerNorm'ed (no affine) when
``layer_norm`` is set, as every eif trunk's features are; the head is Linear(D -> E).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from eif.models.config import ModelConfig
from eif.models.embedder import Embedder
from eif.settings import AUTO, DISPLAY, setting


class FeatureEmbedder(Embedder):
    """:class:`Embedder` whose trunk is the identity on (B, D) or (B, D, 1, 1) feature vectors."""

    def __init__(self, feature_dim: int, embedding_size: int, layer_norm: bool = True) -> None:
        super().__init__(nn.Identity(), feature_dim, embedding_size)
        self.layer_norm = bool(layer_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors (B, D) or (B, D, 1, 1) -> (B, D), LayerNorm'ed if ``layer_norm``."""
        v = x.flatten(1)
        return F.layer_norm(v, (self.feature_dim,)) if self.layer_norm else v

    def importable_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The head of a whole model's state dict (an image model's ``model.pt``): its trunk is dropped,
        so the head trained on the images can be loaded onto features exported from them."""
        return {k: v for k, v in state.items() if not k.startswith("trunk.")}


class FeaturesHead(ModelConfig):
    """``model=features_head``: optional LayerNorm -> head Linear(D -> E) on precomputed features.

    ``in_channels`` and ``feature_dim`` are both D, the size of the data set's vectors (``auto``)."""

    trunk_trains: ClassVar[bool] = False
    takes_features: ClassVar[bool] = True
    name: str = setting("features_head", unkeyed=DISPLAY)
    layer_norm: bool = True

    @model_validator(mode="after")
    def _shape(self) -> FeaturesHead:
        if self.pretrained:
            raise ValueError("pretrained=true is not available for features_head (no trunk weights)")
        if AUTO not in (self.in_channels, self.feature_dim) and self.in_channels != self.feature_dim:
            raise ValueError(
                f"in_channels ({self.in_channels}) and feature_dim ({self.feature_dim}) are both the size of "
                "the feature vectors; leave them auto"
            )
        return self

    def native_feature_dim(self, in_channels: int) -> int:
        return in_channels

    def build(self, pretrained: bool | None = None) -> Embedder:
        return FeatureEmbedder(self.feature_dim, self.embedding_size, self.layer_norm)
