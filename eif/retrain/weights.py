"""Per-sample training weights from influence scores: the paper's epsilon (docs/protocol.md, "Re-training").

Sign convention of the scores: positive = harmful, negative = helpful (docs/architecture.md).
"""

from __future__ import annotations

import torch

from eif.utils.errors import require


def sample_weights(
    scores: torch.Tensor, helpful: float = 2.0, harmful: float = 0.0, topk: int | None = None
) -> torch.Tensor:
    """Weights (H, N) float32 for scores (H, N): helpful -> ``helpful``, harmful -> ``harmful``, rest 1.

    ``topk=None`` (the reference): every sample is helpful or harmful by the sign of its score, and
    only exact zeros keep weight 1. ``topk=k``: only each row's k samples with the largest |score|
    are re-weighted (by sign); all others keep weight 1.
    """
    require(scores.ndim == 2, f"scores must be (confusions, train samples), got shape {tuple(scores.shape)}")
    scores = scores.float()
    w = torch.ones_like(scores)
    selected = torch.ones_like(scores, dtype=torch.bool)
    if topk is not None:
        require(
            0 < topk <= scores.shape[1], f"retrain.weights.topk must be in [1, {scores.shape[1]}], got {topk}"
        )
        idx = scores.abs().topk(topk, dim=1).indices
        selected = torch.zeros_like(selected).scatter_(1, idx, True)
    w[selected & (scores < 0)] = helpful
    w[selected & (scores > 0)] = harmful
    return w
