"""ProxyNCA++ as in the reference code (``ProxyNCA_prob_orig``)."""

from __future__ import annotations

import torch
from pydantic import PositiveFloat
from torch import nn

from eif.losses.base import LossConfig, ProxyLoss, label_nll
from eif.settings import DISPLAY, setting


class ProxyNCAPP(ProxyLoss):
    """L_i = -log softmax_c(-D_ic)[y_i], D_ic = ||s x_i/|x_i| - s p_c/|p_c| ||^2 = 2 s^2 (1 - cos(x_i, p_c)).

    The softmax runs over all C proxies (the positive included); no label smoothing. Scale s=3 is a
    temperature of 1/9. Proxies: (C, E), initialised randn / 8.
    """

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 3.0) -> None:
        super().__init__(num_classes, embedding_size)
        self.scale = float(scale)
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_size) / 8)

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances D (..., B, C) between scaled normalised embeddings and proxies."""
        return 2 * self.scale**2 * (1 - self.cosines(z))

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # -D = 2 s^2 cos - 2 s^2, and log_softmax ignores the constant: two fewer passes over (..., B, C);
        # the label's entry by gather, not a one-hot product (a multiply and a sum over (..., B, C) fewer)
        return label_nll((2 * self.scale**2) * cos, y)

    def cos_logit_scale(self) -> float:
        return 2 * self.scale**2


class ProxyNCAPPConfig(LossConfig):
    """``loss=proxynca_pp``: embeddings and proxies normalised, scaled by ``scale`` (3: temperature 1/9)."""

    name: str = setting("proxynca_pp", unkeyed=DISPLAY)
    scale: PositiveFloat = 3.0

    def build(self, num_classes: int, embedding_size: int) -> ProxyNCAPP:
        return ProxyNCAPP(num_classes, embedding_size, scale=self.scale)
