"""SoftTriple (Qian et al., ICCV 2019) as in the reference code and pytorch-metric-learning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from eif.losses.base import LossConfig, ProxyLoss, class_mask
from eif.settings import DISPLAY, setting


class SoftTriple(ProxyLoss):
    """L_i = -log softmax_c(la * (S_ic - margin [c = y_i]))[y_i],
    S_ic = sum_k softmax_k(s_ick / gamma) s_ick, s_ick = cos(x_i, p_ck).

    Proxies (C*K, E), centre ``c*K + k`` of class c, initialised randn then kaiming_normal_(fan_out).
    With K > 1 and tau > 0, :meth:`regularizer` adds tau times the mean over same-class centre pairs of
    sqrt(2 + eps - 2 cos(p_ck, p_ck')) / 2 (the reference's and PML's ``SparseCentersRegularizer``).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        la: float = 20.0,
        gamma: float = 0.1,
        tau: float = 0.2,
        margin: float = 0.01,
        centers_per_class: int = 1,
    ) -> None:
        super().__init__(num_classes, embedding_size)
        self.centers_per_class = int(centers_per_class)
        self.la = float(la)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.margin = float(margin)
        proxies = torch.randn(num_classes * centers_per_class, embedding_size)
        nn.init.kaiming_normal_(proxies, mode="fan_out")
        self.proxies = nn.Parameter(proxies)

    def class_similarities(self, z: torch.Tensor) -> torch.Tensor:
        """Relaxed class similarities S (..., B, C)."""
        return self._relaxed(self.cosines(z))

    def _relaxed(self, cos: torch.Tensor) -> torch.Tensor:
        """S (..., B, C) from the cosines (..., B, C*K) to every centre."""
        sim = cos.unflatten(-1, (self.num_classes, self.centers_per_class))
        return (F.softmax(sim / self.gamma, dim=-1) * sim).sum(-1)

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self._relaxed(cos)
        onehot = class_mask(y, self.num_classes, s.dtype)
        logp = F.log_softmax(self.la * (s - self.margin * onehot), dim=-1)
        return -(logp * onehot).sum(-1)

    def regularizer(self) -> torch.Tensor:
        if self.centers_per_class < 2 or self.tau <= 0:
            return self.proxies.new_zeros(())
        k = self.centers_per_class
        p = F.normalize(self.proxies, dim=-1).unflatten(0, (self.num_classes, k))  # (C, K, E)
        i, j = torch.triu_indices(k, k, offset=1, device=p.device)
        cos = (p @ p.transpose(-1, -2))[:, i, j]  # (C, K(K-1)/2): each same-class pair once
        eps = torch.finfo(p.dtype).eps
        # sum over the C*K(K-1)/2 same-class pairs divided by C*K(K-1): half their mean, as in the
        # original SoftTriple code and PML's SparseCentersRegularizer
        return self.tau * torch.sqrt(2.0 + eps - torch.clamp(2.0 * cos, max=2.0)).sum() / (2 * cos.numel())


class SoftTripleConfig(LossConfig):
    """``loss=softtriple``: scale ``la``, relaxation ``gamma``, margin, ``centers_per_class`` centres per
    class and the centre regulariser weight ``tau`` (inactive with one centre)."""

    name: str = setting("softtriple", unkeyed=DISPLAY)
    la: PositiveFloat = 20.0
    gamma: PositiveFloat = 0.1
    tau: float = 0.2
    margin: float = 0.01
    centers_per_class: PositiveInt = 1

    def build(self, num_classes: int, embedding_size: int) -> SoftTriple:
        return SoftTriple(
            num_classes,
            embedding_size,
            la=self.la,
            gamma=self.gamma,
            tau=self.tau,
            margin=self.margin,
            centers_per_class=self.centers_per_class,
        )
