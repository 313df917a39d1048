"""A batched, functional Adam for many heads trained side by side.

Why not ``torch.optim.Adam``: it mutates ``nn.Parameter`` objects in place and keeps its state in a
per-parameter dict, so it cannot run under ``torch.func.vmap`` or any other functional transform,
and it has no notion of "H independent models". Here the H heads are one tensor with a leading
head dimension and the optimiser is a pure function ``(param, grad, state) -> (param, state)``.
Adam is element-wise, so each head follows exactly the trajectory it would follow with its own
``torch.optim.Adam`` (tests/test_retrain.py checks this against torch.optim.Adam).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AdamState:
    """First/second moment estimates (same shape as the parameter) and the step count."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int = 0

    @classmethod
    def zeros_like(cls, param: torch.Tensor) -> AdamState:
        return cls(torch.zeros_like(param), torch.zeros_like(param), 0)


@torch.no_grad()
def adam_step(param: torch.Tensor, grad: torch.Tensor, state: AdamState, lr: float,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> tuple[torch.Tensor, AdamState]:
    """One Adam update (no weight decay, no amsgrad), the same formula as ``torch.optim.Adam``.

    ``param`` and ``grad`` have any shape, e.g. (H, E, D) for H heads; returns the new parameter
    (a new tensor) and the updated state (moments updated in place).
    """
    beta1, beta2 = betas
    step = state.step + 1
    state.exp_avg.lerp_(grad, 1.0 - beta1)
    state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias1 = 1.0 - beta1 ** step
    bias2_sqrt = (1.0 - beta2 ** step) ** 0.5
    denom = (state.exp_avg_sq.sqrt() / bias2_sqrt).add_(eps)
    new = param.addcdiv(state.exp_avg, denom, value=-lr / bias1)
    return new, AdamState(state.exp_avg, state.exp_avg_sq, step)
