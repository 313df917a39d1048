"""A batched, functional Adam for many heads trained side by side.

Why not ``torch.optim.Adam``: it mutates ``nn.Parameter`` objects in place and keeps its state in a
per-parameter dict, so it cannot run under ``torch.func.vmap`` or any other functional transform,
and it has no notion of "H independent models". Here the H heads are one tensor with a leading
head dimension and the optimiser is a plain function of tensors ``(param, grad, state)`` that
updates them in place (no module, no parameter registry).
Adam is element-wise, so each head follows exactly the trajectory it would follow with its own
``torch.optim.Adam`` (tests/test_retrain.py checks this against torch.optim.Adam).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import PositiveFloat

from eif.settings import Settings


class AdamConfig(Settings):
    """Adam's settings (no weight decay, no amsgrad); the values of a job are ``retrain.optimizer`` in
    conf/retrain/default.yaml (the reference's re-training: lr 4e-5, betas (0.9, 0.999), eps 1e-8)."""

    lr: PositiveFloat
    betas: tuple[float, float]
    eps: PositiveFloat


@dataclass
class AdamState:
    """First/second moment estimates (same shape as the parameter), a scratch buffer, the step count."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    denom: torch.Tensor
    step: int = 0

    @classmethod
    def zeros_like(cls, param: torch.Tensor) -> AdamState:
        return cls(torch.zeros_like(param), torch.zeros_like(param), torch.empty_like(param), 0)


@torch.no_grad()
def adam_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: AdamState,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam update of ``param`` in place (no weight decay, no amsgrad), as ``torch.optim.Adam``.

    ``param`` and ``grad`` have any shape, e.g. (H, E, D) for H heads. Every operation writes into
    existing buffers: for hundreds of heads the tensors are gigabytes, and fresh allocations of that
    size (page faults) cost more than the arithmetic.
    """
    beta1, beta2 = betas
    state.step += 1
    state.exp_avg.lerp_(grad, 1.0 - beta1)
    state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias1 = 1.0 - beta1**state.step
    bias2_sqrt = (1.0 - beta2**state.step) ** 0.5
    torch.sqrt(state.exp_avg_sq, out=state.denom)
    state.denom.div_(bias2_sqrt).add_(eps)
    param.addcdiv_(state.exp_avg, state.denom, value=-lr / bias1)
