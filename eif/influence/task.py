# pyright: strict
"""The confusion task: what EIF and IF need from a model, as pure tensor functions.

Following kronfluence's ``Task``, the influence code only talks to a task and to tensors (trunk
features ``F`` (N, D), head weight ``W`` (E, D), bias ``b`` (E,)); never to datasets or images.
Only ``W`` is perturbed; ``b`` and the loss's parameters stay fixed (docs/protocol.md, EIF and IF).
The loss is seen only through its contract (:class:`~eif.losses.base.MetricLoss`, docs/losses.md):
``per_sample`` and, when it has one, the cosine form (``cosine_targets``, ``per_sample_cos``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from eif.losses.base import MetricLoss, require_batch_independent


def normalized_sq_distance(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """d = ||z_a/|z_a| - z_b/|z_b| ||^2 = 2 - 2 cos(z_a, z_b), in [0, 4]: (..., E), (..., E) -> (...)."""
    return (F.normalize(z_a, dim=-1) - F.normalize(z_b, dim=-1)).pow(2).sum(-1)


@dataclass(frozen=True)
class ConfusionTask:
    """``train_loss(z (..., N, E), y (N,)) -> (..., N)`` per-sample training losses (pure, usable under
    ``torch.func``); ``measurement(z_a, z_b) -> d`` the test-pair distance, (..., E) x2 -> (...).
    ``cos_loss``: the same loss when it has the cosine form, i.e. depends on z only through the cosines
    to its ``cosine_targets()`` (M, E) (``train_loss(z, y) == cos_loss.per_sample_cos(cos_loss.cosines(z),
    y)``), else ``None``; EIF and IF then use closed forms through the cosines instead of the generic
    autograd paths. Both must be per-sample and batch-independent (the loss contract)."""

    train_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    measurement: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(default=normalized_sq_distance)
    cos_loss: MetricLoss | None = None

    @staticmethod
    def from_loss(loss: MetricLoss) -> ConfusionTask:
        """The task of a trained :class:`MetricLoss`, its parameters frozen (no gradient flows to them);
        a batch-dependent loss is one :class:`~eif.utils.errors.EifError` line."""
        require_batch_independent(loss)
        loss.requires_grad_(False)
        return ConfusionTask(train_loss=loss.per_sample, cos_loss=loss if loss.has_cos_form() else None)


def head(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """z = f W^T + b: (..., N, D) -> (..., N, E)."""
    return features @ weight.transpose(-1, -2) + bias
