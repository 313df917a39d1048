"""Metric-learning losses behind one contract (:mod:`eif.losses.base`, docs/losses.md): per-sample,
batch-independent losses with per-sample weights; proxies and the cosine form are optional."""

from __future__ import annotations

from typing import Any

from eif.losses.base import LossConfig, MetricLoss, ProxyLoss
from eif.losses.pml import ArcFaceLoss, CosFaceLoss, NormalizedSoftmaxLoss, ProxyNCALoss
from eif.losses.proxynca_pp import ProxyNCAPP
from eif.losses.softtriple import SoftTriple
from eif.settings import parse
from eif.utils.errors import require

__all__ = [
    "ArcFaceLoss",
    "CosFaceLoss",
    "LossConfig",
    "MetricLoss",
    "NormalizedSoftmaxLoss",
    "ProxyLoss",
    "ProxyNCALoss",
    "ProxyNCAPP",
    "SoftTriple",
    "build_loss",
]


def build_loss(node: Any, num_classes: int, embedding_size: int) -> MetricLoss:
    """A :class:`MetricLoss` from a ``loss`` node (with ``_target_``) or its settings, for ``num_classes``."""
    require(int(num_classes) >= 2, f"a metric loss needs at least 2 training classes, got {num_classes}")
    cfg = node if isinstance(node, LossConfig) else parse(LossConfig, node, "loss")
    return cfg.build(int(num_classes), int(embedding_size))
