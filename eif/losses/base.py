"""The interface every metric-learning loss implements."""

from __future__ import annotations

import torch
from torch import nn


class MetricLoss(nn.Module):
    """A proxy-based loss with per-sample values and per-sample weights.

    ``proxies``: nn.Parameter (C*K, E), centre ``c*K + k`` belongs to class ``c``.
    ``per_sample(z, y)``: embeddings z (..., B, E) (unnormalised; the loss normalises), labels y (B,) int64
    in [0, C) -> losses (..., B). It is a pure tensor function (no in-place ops, no ``.item()``), so it
    broadcasts over leading dims of z and works under ``torch.func.vmap``/``grad``/``jvp``.
    ``forward(z, y, weights)``: mean_i(w_i * L_i) + ``regularizer()``; the sum is divided by B (not by
    sum w), as the reference does.
    """

    proxies: nn.Parameter

    def __init__(self, num_classes: int, embedding_size: int, centers_per_class: int = 1) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.centers_per_class = int(centers_per_class)

    def per_sample(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (..., B) for embeddings (..., B, E) and labels (B,)."""
        raise NotImplementedError

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
