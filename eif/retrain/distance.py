"""Confusion distances and their change after re-training (paper Eq. 7-8; docs/protocol.md, "Mining"
and "Re-training").

d(p; W) for a test pair p = (a, b) is the squared Euclidean distance between the L2-normalised
head outputs, ``||z_a/|z_a| - z_b/|z_b| ||^2 = 2 - 2 cos``, with z = f W^T + bias on the test
trunk features f of the original (unchanged) trunk. A group's d is the mean over its pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_distance(w: torch.Tensor, bias: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """d for P pairs under one or more heads: ``w`` (..., E, D), ``fa``/``fb`` (P, D) -> (..., P)."""
    za = F.normalize(fa @ w.transpose(-1, -2) + bias, dim=-1)
    zb = F.normalize(fb @ w.transpose(-1, -2) + bias, dim=-1)
    return (za - zb).pow(2).sum(-1)


def confusion_distance(
    w: torch.Tensor, bias: torch.Tensor, test_features: torch.Tensor, pairs: torch.Tensor
) -> torch.Tensor:
    """Mean d over a confusion's pairs: ``pairs`` int (P, 2) test indices, ``w`` (..., E, D) -> (...)."""
    return pair_distance(w, bias, test_features[pairs[:, 0]], test_features[pairs[:, 1]]).mean(-1)


def confusion_distances(
    ws: torch.Tensor, bias: torch.Tensor, test_features: torch.Tensor, pairs: list[torch.Tensor]
) -> torch.Tensor:
    """d of K confusions under H heads at once: ``ws`` (H, E, D), ``pairs`` K arrays (P_k, 2) of test
    indices -> (H, K), each confusion's mean d over its pairs. Every member test sample is embedded
    once per head."""
    flat = torch.cat([torch.as_tensor(p).reshape(-1, 2) for p in pairs])
    members, inverse = torch.unique(flat, return_inverse=True)
    z = F.normalize(test_features[members] @ ws.transpose(-1, -2) + bias, dim=-1)  # (H, R, E)
    d = (z[:, inverse[:, 0]] - z[:, inverse[:, 1]]).pow(2).sum(-1)  # (H, sum P_k)
    owner = torch.repeat_interleave(torch.arange(len(pairs)), torch.tensor([len(p) for p in pairs]))
    total = torch.zeros(ws.shape[0], len(pairs), dtype=d.dtype).index_add_(1, owner, d)
    return total / torch.bincount(owner, minlength=len(pairs)).to(d.dtype)
