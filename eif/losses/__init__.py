"""Proxy-based metric-learning losses with per-sample values and weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eif.losses.base import MetricLoss
from eif.losses.proxynca_pp import ProxyNCAPP
from eif.losses.softtriple import SoftTriple
from eif.utils.errors import EifError, require

__all__ = ["MetricLoss", "ProxyNCAPP", "SoftTriple", "build_loss"]


def build_loss(loss_cfg: Mapping[str, Any], num_classes: int, embedding_size: int) -> MetricLoss:
    """A :class:`MetricLoss` from a ``conf/loss/*.yaml`` group, for ``num_classes`` training classes."""
    require(int(num_classes) >= 2, f"a metric loss needs at least 2 training classes, got {num_classes}")
    name = loss_cfg["name"]
    if name == "proxynca_pp":
        scale = float(loss_cfg["scale"])
        require(scale > 0, f"loss.scale must be positive, got {scale}")
        return ProxyNCAPP(num_classes, embedding_size, scale=scale)
    if name == "softtriple":
        k = int(loss_cfg["centers_per_class"])
        require(k >= 1, f"loss.centers_per_class must be >= 1, got {k}")
        require(float(loss_cfg["gamma"]) > 0, f"loss.gamma must be positive, got {loss_cfg['gamma']}")
        return SoftTriple(
            num_classes,
            embedding_size,
            la=float(loss_cfg["la"]),
            gamma=float(loss_cfg["gamma"]),
            tau=float(loss_cfg["tau"]),
            margin=float(loss_cfg["margin"]),
            centers_per_class=k,
        )
    raise EifError(f"loss.name must be proxynca_pp or softtriple, got {name!r}")
