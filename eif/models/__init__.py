"""Embedding models: :class:`Embedder`, the paper's ResNet-50, a small CNN, reference checkpoints."""

from __future__ import annotations

from typing import Any

from eif.models.config import ModelConfig
from eif.models.embedder import Embedder
from eif.settings import parse

__all__ = ["Embedder", "ModelConfig", "build_model"]


def build_model(node: Any, pretrained: bool | None = None) -> Embedder:
    """An :class:`Embedder` from a ``model`` node (with ``_target_``) or its settings object."""
    cfg = node if isinstance(node, ModelConfig) else parse(ModelConfig, node, "model")
    return cfg.build(pretrained)
