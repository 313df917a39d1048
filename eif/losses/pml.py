"""pytorch-metric-learning (PML) losses as eif losses: per-sample adapters and the refused batch losses.

PML's loss modules take one (B, E) batch and reduce it. The adapters here compute the same per-sample
losses (PML's module with ``reducer=reducers.DoNothingReducer()``) as pure tensor functions of batched
(..., B, E) embeddings, each with its cosine form, and keep PML's parameter names, defaults, weight
layout and initialisation (``torch.nn.init.normal_``), so state dicts load both ways
(``tests/test_losses_pml.py`` checks them against PML 2.9). With c_im = cos(z_i, w_m):

- ``ProxyNCALoss``: proxies (C, E); PML's ``LpDistance(power=2)`` on unit vectors gives
  d_im = 2 - 2 c_im and L_i = -log softmax_m(-s d_im)[y_i] = -log softmax_m(2 s c_im)[y_i],
  s = ``softmax_scale``. (PML drops a sample whose softmax probability underflows to exactly 0; the
  adapter keeps its large finite loss.)
- ``NormalizedSoftmaxLoss``: W (E, C); L_i = -log softmax_m(c_im / T)[y_i], T = ``temperature``.
- ``CosFaceLoss``: W (E, C); L_i = -log softmax_m(s (c_im - m [m = y_i]))[y_i].
- ``ArcFaceLoss``: W (E, C); the label's logit s cos(theta + m) with theta = acos(c_iy), m =
  ``margin`` in **degrees** (PML converts to radians); for theta > pi - m PML's continuation
  s (cos theta - m sin m) (m in radians) instead.

PML applies no regulariser by default (``weight_regularizer=None``, ``embedding_regularizer=None``)
and no weight decay (an optimiser setting), so the adapters have none.

PML's pair and triplet losses (``TripletMarginLoss``, ``ContrastiveLoss``, ``MultiSimilarityLoss``, ...)
compute a sample's loss from the other samples of its batch: :class:`BatchDependentConfig` declares
them batch-dependent, and config validation refuses them with one line.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn

from eif.losses.base import LossConfig, MetricLoss, ProxyLoss, at_label, class_mask, label_nll
from eif.settings import DISPLAY, setting


class ProxyNCALoss(ProxyLoss):
    """PML's ``ProxyNCALoss``: L_i = -log softmax_m(2 s cos(z_i, p_m))[y_i] (see the module doc).

    Proxies (C, E), initialised N(0, 1). ``ProxyNCALoss(softmax_scale=s^2)`` equals ProxyNCA++ with
    scale s."""

    def __init__(self, num_classes: int, embedding_size: int, softmax_scale: float = 1.0) -> None:
        super().__init__(num_classes, embedding_size)
        self.softmax_scale = float(softmax_scale)
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_size))

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # -s (2 - 2 cos): the constant -2 s does not change the softmax
        return label_nll((2 * self.softmax_scale) * cos, y)

    def cos_logit_scale(self) -> float:
        return 2 * self.softmax_scale


class ClassWeightLoss(MetricLoss):
    """A PML classification loss with class weights ``W`` (E, C) as PML stores them (column c: class c),
    initialised N(0, 1); its cosine targets are the unit columns, (C, E)."""

    def __init__(self, num_classes: int, embedding_size: int) -> None:
        super().__init__(num_classes, embedding_size)
        self.W = nn.Parameter(torch.randn(embedding_size, num_classes))

    def cosine_targets(self) -> torch.Tensor:
        return F.normalize(self.W, dim=0).T


class NormalizedSoftmaxLoss(ClassWeightLoss):
    """PML's ``NormalizedSoftmaxLoss``: L_i = -log softmax_m(cos(z_i, w_m) / temperature)[y_i]."""

    def __init__(self, num_classes: int, embedding_size: int, temperature: float = 0.05) -> None:
        super().__init__(num_classes, embedding_size)
        self.temperature = float(temperature)

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return label_nll(cos / self.temperature, y)

    def cos_logit_scale(self) -> float:
        return 1 / self.temperature


class CosFaceLoss(ClassWeightLoss):
    """PML's ``CosFaceLoss``: L_i = -log softmax_m(scale (cos(z_i, w_m) - margin [m = y_i]))[y_i]."""

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.35, scale: float = 64.0
    ) -> None:
        super().__init__(num_classes, embedding_size)
        self.margin = float(margin)
        self.scale = float(scale)

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = class_mask(y, self.num_classes, cos.dtype)
        return label_nll(self.scale * (cos - self.margin * onehot), y)

    def cos_logit_scale(self) -> float:  # the margin is an offset at the label
        return self.scale


class ArcFaceLoss(ClassWeightLoss):
    """PML's ``ArcFaceLoss``: the label's logit becomes scale * cos(theta + m), theta = acos(cos(z_i,
    w_y)) and m = ``margin`` degrees, or scale * (cos theta - m sin m) past theta = pi - m (m in radians,
    PML's continuation); the other logits stay scale * cos(z_i, w_m)."""

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 28.6, scale: float = 64.0
    ) -> None:
        super().__init__(num_classes, embedding_size)
        self.margin = float(margin)
        self.scale = float(scale)

    def target_cos(self, cos_y: torch.Tensor) -> torch.Tensor:
        """The margin-penalised cosine of the label's class, elementwise."""
        m = math.radians(self.margin)
        theta = torch.acos(cos_y.clamp(-1.0, 1.0))
        return torch.where(theta <= math.pi - m, torch.cos(theta + m), torch.cos(theta) - m * math.sin(m))

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = class_mask(y, self.num_classes, cos.dtype)
        cos_y = at_label(cos, y)
        return label_nll(self.scale * (cos + onehot * (self.target_cos(cos_y) - cos_y).unsqueeze(-1)), y)


class ProxyNCAConfig(LossConfig):
    """``loss=proxynca``: PML's ``ProxyNCALoss``; ``softmax_scale`` multiplies -|x^ - p^|^2 (PML: 1)."""

    name: str = setting("proxynca", unkeyed=DISPLAY)
    softmax_scale: PositiveFloat = 1.0

    def build(self, num_classes: int, embedding_size: int) -> ProxyNCALoss:
        return ProxyNCALoss(num_classes, embedding_size, softmax_scale=self.softmax_scale)


class NormalizedSoftmaxConfig(LossConfig):
    """``loss=normalized_softmax``: PML's ``NormalizedSoftmaxLoss``, logits cos / ``temperature``."""

    name: str = setting("normalized_softmax", unkeyed=DISPLAY)
    temperature: PositiveFloat = 0.05

    def build(self, num_classes: int, embedding_size: int) -> NormalizedSoftmaxLoss:
        return NormalizedSoftmaxLoss(num_classes, embedding_size, temperature=self.temperature)


class CosFaceConfig(LossConfig):
    """``loss=cosface``: PML's ``CosFaceLoss``, additive cosine ``margin``, logits times ``scale``."""

    name: str = setting("cosface", unkeyed=DISPLAY)
    margin: NonNegativeFloat = 0.35
    scale: PositiveFloat = 64.0

    def build(self, num_classes: int, embedding_size: int) -> CosFaceLoss:
        return CosFaceLoss(num_classes, embedding_size, margin=self.margin, scale=self.scale)


class ArcFaceConfig(LossConfig):
    """``loss=arcface``: PML's ``ArcFaceLoss``, additive angular ``margin`` in degrees, logits times
    ``scale``."""

    name: str = setting("arcface", unkeyed=DISPLAY)
    margin: float = setting(28.6, ge=0, lt=180)
    scale: PositiveFloat = 64.0

    def build(self, num_classes: int, embedding_size: int) -> ArcFaceLoss:
        return ArcFaceLoss(num_classes, embedding_size, margin=self.margin, scale=self.scale)


class BatchDependentConfig(LossConfig):
    """``loss=triplet``, ``contrastive``, ``multi_similarity``: PML's loss ``pml``, whose per-sample terms
    come from the pairs or triplets a sample forms inside its batch. Declared batch-dependent, so
    validating these settings fails with one line (:func:`~eif.losses.base.batch_dependent_message`)."""

    batch_independent: ClassVar[bool] = False
    pml: str

    @property
    def label(self) -> str:
        return f"{self.name} (pytorch-metric-learning's {self.pml})"
