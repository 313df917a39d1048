"""Per-sample training weights from influence scores: the paper's epsilon (docs/protocol.md, "Re-training").

Sign convention of the scores: positive = harmful, negative = helpful (docs/architecture.md).

Two weighting schemes, by name in :data:`SCHEMES` (``retrain.weights.schemes``):

- ``sign`` (the paper, the reference): every selected helpful sample gets ``helpful``, every selected
  harmful one ``harmful``; only membership of the two top sets matters, so two methods whose sets
  agree give bit-identical re-trainings whatever their scores' magnitudes.
- ``magnitude``: within each top set the weights are proportional to |score|, scaled so that the
  set's total weight is the ``sign`` scheme's (``helpful`` x set size, ``harmful`` x set size); equal
  magnitudes give exactly the ``sign`` weights. With ``harmful = 0`` harmful samples are still dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from eif.utils.errors import require

Scheme = Callable[[torch.Tensor, float, float, int | None], torch.Tensor]
"""``scheme(scores (H, N), helpful, harmful, topk) -> weights (H, N)`` float32."""


def top_sets(scores: torch.Tensor, topk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(helpful, harmful) masks (H, N) of the samples a scheme re-weights: ``topk=None`` every sample
    by the sign of its score (exact zeros are in neither set); ``topk=k`` only each row's k samples with
    the largest |score|."""
    require(scores.ndim == 2, f"scores must be (confusions, train samples), got shape {tuple(scores.shape)}")
    selected = torch.ones_like(scores, dtype=torch.bool)
    if topk is not None:
        require(
            0 < topk <= scores.shape[1], f"retrain.weights.topk must be in [1, {scores.shape[1]}], got {topk}"
        )
        idx = scores.abs().topk(topk, dim=1).indices
        selected = torch.zeros_like(selected).scatter_(1, idx, True)
    return selected & (scores < 0), selected & (scores > 0)


def sample_weights(
    scores: torch.Tensor, helpful: float = 2.0, harmful: float = 0.0, topk: int | None = None
) -> torch.Tensor:
    """The ``sign`` scheme: weights (H, N) float32 for scores (H, N): helpful -> ``helpful``, harmful ->
    ``harmful``, rest 1 (:func:`top_sets` says which samples are helpful or harmful)."""
    scores = scores.float()
    good, bad = top_sets(scores, topk)
    w = torch.ones_like(scores)
    w[good] = helpful
    w[bad] = harmful
    return w


def magnitude_weights(
    scores: torch.Tensor, helpful: float = 2.0, harmful: float = 0.0, topk: int | None = None
) -> torch.Tensor:
    """The ``magnitude`` scheme: weights (H, N) float32; in each row, a helpful sample i gets
    ``helpful * |s_i| / mean_{helpful j} |s_j|``, a harmful one ``harmful * |s_i| / mean_{harmful j}
    |s_j|``, the rest 1. Each row's total over each set equals the ``sign`` scheme's."""
    scores = scores.float()
    good, bad = top_sets(scores, topk)
    w = torch.ones_like(scores)
    mag = scores.abs()
    for mask, value in ((good, helpful), (bad, harmful)):
        count = mask.sum(1, keepdim=True)
        total = torch.where(mask, mag, 0.0).sum(1, keepdim=True)  # > 0 wherever count > 0
        scaled = value * count * mag / total.clamp_min(torch.finfo(mag.dtype).tiny)
        w = torch.where(mask, scaled, w)
    return w


SCHEMES: dict[str, Scheme] = {"sign": sample_weights, "magnitude": magnitude_weights}
"""The weighting schemes by name (``retrain.weights.schemes``); ``sign`` is the paper's."""
