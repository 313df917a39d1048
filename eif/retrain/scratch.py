"""Batched re-training of the head (W, b) and the loss's parameters (proxies) from a fresh
initialisation, on cached trunk features, for many sample weightings at once (the LDS's
``scratch`` protocol, TRAK's re-training from scratch restricted to what the train stage trains on
top of the trunk).

The train stage's recipe for these parameters: Adam with learning rate ``lr_head`` for W and b,
``lr_proxies`` for the loss's parameters, its ``eps`` and ``weight_decay`` (L2 added to the
gradient, as ``torch.optim.Adam``), every gradient element clamped to +-``clip_grad_value`` first.
H heads are tensors with a leading head dimension; the loss, with per-head parameters, runs under
``torch.func.vmap`` (``MetricLoss`` is a pure tensor function, docs/losses.md), so head h follows the
trajectory of its own ``torch.optim.Adam`` (tests/test_lds.py checks this against a plain loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from eif.losses.base import MetricLoss
from eif.retrain.adam import AdamState, adam_step
from eif.retrain.head import EpochBatches
from eif.settings import Settings
from eif.utils.errors import require


class HeadRecipe(Settings):
    """The train stage's recipe for the head and proxies (``train.*`` of the job; units: epochs and
    Adam learning rates). ``max_batches_per_epoch``: None = every batch of the sampler."""

    epochs: PositiveInt
    lr_head: NonNegativeFloat
    lr_proxies: NonNegativeFloat
    eps: PositiveFloat
    weight_decay: NonNegativeFloat
    clip_grad_value: PositiveFloat | None
    max_batches_per_epoch: PositiveInt | None
    # torch.optim.Adam's default, which the trainer uses (the train recipe has no such setting)
    betas: tuple[float, float] = (0.9, 0.999)


def train_heads(
    w_init: torch.Tensor,
    b_init: torch.Tensor,
    loss: MetricLoss,
    weights: torch.Tensor,
    epoch: EpochBatches,
    recipe: HeadRecipe,
    device: torch.device | str = "cpu",
    heads_per_chunk: int | None = None,
    progress: bool = False,
    desc: str = "re-train heads from scratch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train H heads from ``w_init`` (E, D), ``b_init`` (E,) and ``loss``'s current parameters, head h
    with sample weights ``weights[h]`` ((H, N_train), by training-set position): each batch of
    ``epoch`` is one step on ``loss(z_h, y, weights[h, i])`` (mean over the batch of w_i L_i plus the
    loss's regulariser). Returns (W (H, E, D), b (H, E)) on the CPU; ``loss`` is left unchanged."""
    require(weights.ndim == 2, f"weights must be (heads, train samples), got {tuple(weights.shape)}")
    device = torch.device(device)
    feats = torch.as_tensor(epoch.features, dtype=torch.float32).to(device)
    labels = torch.as_tensor(epoch.labels, dtype=torch.long).to(device)
    index = torch.as_tensor(epoch.indices, dtype=torch.long).to(device)
    ptr = [int(p) for p in epoch.batch_ptr]
    loss = loss.to(device)
    names = [n for n, _ in loss.named_parameters()]
    p0 = [p.detach().to(device, torch.float32) for _, p in loss.named_parameters()]
    n_heads = weights.shape[0]
    chunk = n_heads if heads_per_chunk is None else max(1, int(heads_per_chunk))
    lrs = [recipe.lr_head, recipe.lr_head] + [recipe.lr_proxies] * len(p0)
    out_w, out_b = [], []
    bar = tqdm(
        total=-(-n_heads // chunk) * (len(ptr) - 1), desc=desc, unit="step", leave=False, disable=not progress
    )

    def head_loss(params: Sequence[torch.Tensor], z: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
        return functional_call(loss, dict(zip(names, params, strict=True)), (z, y, w))

    batched_loss = vmap(head_loss, in_dims=(0, 0, None, 0))
    for start in range(0, n_heads, chunk):
        sw = weights[start : start + chunk].to(device, torch.float32)
        h = sw.shape[0]
        params = [w_init.detach().to(device, torch.float32), b_init.detach().to(device, torch.float32), *p0]
        params = [p.expand(h, *p.shape).clone() for p in params]
        states = [AdamState.zeros_like(p) for p in params]
        for t in range(len(ptr) - 1):
            f, y, i = feats[ptr[t] : ptr[t + 1]], labels[ptr[t] : ptr[t + 1]], index[ptr[t] : ptr[t + 1]]
            leaves = [p.requires_grad_(True) for p in params]
            z = torch.einsum("bd,hed->hbe", f, leaves[0]) + leaves[1][:, None, :]
            value = batched_loss(leaves[2:], z, y, sw[:, i])  # (H,)
            grads = torch.autograd.grad(value.sum(), leaves)
            params = [p.detach() for p in leaves]
            for p, g, state, lr in zip(params, grads, states, lrs, strict=True):
                if recipe.clip_grad_value is not None:
                    g = g.clamp(-recipe.clip_grad_value, recipe.clip_grad_value)
                if recipe.weight_decay:
                    g = g.add(p, alpha=recipe.weight_decay)
                adam_step(p, g, state, lr, recipe.betas, recipe.eps)
            bar.update()
        out_w.append(params[0].cpu())
        out_b.append(params[1].cpu())
    bar.close()
    return torch.cat(out_w), torch.cat(out_b)
