"""The interface every metric-learning loss implements."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eif.settings import DISPLAY, Pluggable, setting


class MetricLoss(nn.Module):
    """A proxy-based loss with per-sample values and per-sample weights.

    ``proxies``: nn.Parameter (C*K, E), centre ``c*K + k`` belongs to class ``c``.
    ``per_sample(z, y)``: embeddings z (..., B, E) (unnormalised; the loss normalises), labels y (B,) int64
    in [0, C) -> losses (..., B). It is a pure tensor function (no in-place ops, no ``.item()``), so it
    broadcasts over leading dims of z and works under ``torch.func.vmap``/``grad``/``jvp``.
    ``forward(z, y, weights)``: mean_i(w_i * L_i) + ``regularizer()``; the sum is divided by B (not by
    sum w), as the reference does.

    A loss that depends on z only through its cosines to the proxies implements
    ``per_sample_cos(cos, y)`` and inherits ``per_sample(z, y) = per_sample_cos(cosines(z), y)``, so both
    share one formula; influence code then works on cosines built from low-rank pieces
    (:meth:`has_cos_form`). A loss without that form overrides ``per_sample`` instead.
    """

    proxies: nn.Parameter

    def __init__(self, num_classes: int, embedding_size: int, centers_per_class: int = 1) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.centers_per_class = int(centers_per_class)

    def unit_proxies(self) -> torch.Tensor:
        """The L2-normalised proxies p^_m (C*K, E)."""
        return F.normalize(self.proxies, dim=-1)

    def cosines(self, z: torch.Tensor) -> torch.Tensor:
        """cos(z_i, p_m) (..., B, C*K) for embeddings z (..., B, E)."""
        return F.normalize(z, dim=-1) @ self.unit_proxies().transpose(-1, -2)

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (..., B) from the cosines (..., B, C*K) to every proxy and labels (B,)."""
        raise NotImplementedError(f"{type(self).__name__} has no cosine form; it overrides per_sample")

    @classmethod
    def has_cos_form(cls) -> bool:
        """Whether this loss implements :meth:`per_sample_cos` (depends on z only through cosines)."""
        return cls.per_sample_cos is not MetricLoss.per_sample_cos

    def per_sample(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (..., B) for embeddings (..., B, E) and labels (B,)."""
        return self.per_sample_cos(self.cosines(z), y)

    def regularizer(self) -> torch.Tensor:
        """A sample-independent term added once by :meth:`forward` (zero unless overridden)."""
        return self.proxies.new_zeros(())

    def forward(self, z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """mean_i(w_i * L_i) over the last (batch) dim plus the regulariser: shape (...)."""
        losses = self.per_sample(z, y)
        if weights is not None:
            losses = losses * weights.to(losses.dtype)
        return losses.mean(-1) + self.regularizer()


def class_mask(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot (B, C) of labels y (B,), built by comparison so it works under ``torch.func.vmap``."""
    return (y.unsqueeze(-1) == torch.arange(num_classes, device=y.device)).to(dtype)


class LossConfig(Pluggable):
    """``loss``: a loss is one file plus one YAML; ``conf/loss/<name>.yaml`` names its settings class
    with ``_target_`` and :meth:`build` makes the :class:`MetricLoss` for the training classes."""

    abstract: ClassVar[bool] = True
    name: str = setting(unkeyed=DISPLAY)

    def build(self, num_classes: int, embedding_size: int) -> MetricLoss:
        raise NotImplementedError
