"""Embedding models: :class:`Embedder`, the paper's ResNet-50, a small CNN, reference checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eif.models.embedder import Embedder
from eif.models.resnet import RESNET50_FEATURE_DIM, build_resnet50
from eif.models.small_cnn import build_small_cnn
from eif.utils.errors import EifError, require

__all__ = ["Embedder", "build_model"]


def build_model(model_cfg: Mapping[str, Any]) -> Embedder:
    """An :class:`Embedder` from a ``conf/model/*.yaml`` group (``name``, ``in_channels``, ``feature_dim``,
    ``embedding_size``, ``pretrained``)."""
    name = model_cfg["name"]
    in_channels = int(model_cfg["in_channels"])
    feature_dim = int(model_cfg["feature_dim"])
    embedding_size = int(model_cfg["embedding_size"])
    pretrained = bool(model_cfg.get("pretrained", False))
    require(
        in_channels >= 1 and feature_dim >= 1 and embedding_size >= 1,
        f"model.in_channels, feature_dim and embedding_size must be positive, got "
        f"{in_channels}, {feature_dim}, {embedding_size}",
    )
    if name == "resnet50":
        require(
            feature_dim == RESNET50_FEATURE_DIM,
            f"model.feature_dim must be {RESNET50_FEATURE_DIM} for resnet50, got {feature_dim}",
        )
        return build_resnet50(pretrained, embedding_size, in_channels)
    if name == "small_cnn":
        require(not pretrained, "model.pretrained=true is not available for small_cnn (no weights exist)")
        return build_small_cnn(in_channels, feature_dim, embedding_size)
    raise EifError(f"model.name must be resnet50 or small_cnn, got {name!r}")
