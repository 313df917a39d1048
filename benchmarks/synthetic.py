"""Realistic benchmark inputs: a head and proxies trained to a loss plateau on clustered features.

Random heads have a Hessian unlike a trained model's (no sharp top, no plateau), so solver costs
measured on them say little. Here features are LayerNorm'ed ReLU outputs around one mean per class
(like the max-pooled, LayerNorm'ed trunk features), a linear head and ProxyNCA++ proxies are trained
with Adam until the epoch loss stops falling (relative change below ``plateau`` for 3 epochs), and
the confusions are mined as the pipeline does: test samples (other classes) whose 1-NN has another
class, the first K in index order. The result is cached under ``benchmarks/.cache/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eif.influence import ConfusionTask
from eif.influence.mining import confusion_pairs, nearest_neighbours
from eif.influence.task import head
from eif.losses import ProxyNCAPP

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass
class Trained:
    """A trained head: ``task`` (with the proxies), train/test features and labels, W, b, the mined
    confusion ``pairs`` (K, 2), the final ``loss`` and the training ``seconds``."""

    task: ConfusionTask
    ftr: torch.Tensor
    ytr: torch.Tensor
    fte: torch.Tensor
    yte: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    pairs: np.ndarray
    loss: float
    seconds: float


def features(
    means: torch.Tensor, labels: torch.Tensor, noise: float, lift: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """LayerNorm(ReLU(lift(latent))) with latent = class mean + noise (overlapping classes in a low-
    dimensional latent space, as trunk features have a low effective rank) plus a little isotropic noise."""
    latent = means[labels] + noise * torch.randn(len(labels), means.shape[1], generator=gen)
    x = latent @ lift + 0.1 * torch.randn(len(labels), lift.shape[1], generator=gen)
    return torch.nn.functional.layer_norm(x.relu(), (lift.shape[1],))


def trained_problem(
    n: int,
    d: int,
    e: int,
    c: int,
    k: int,
    seed: int = 0,
    noise: float = 0.6,
    latent: int = 32,
    plateau: float = 1e-3,
    max_epochs: int = 300,
) -> Trained:
    """Train (or load) the head for N train samples of C classes, D features, E dims, K confusions."""
    path = CACHE / f"trained_n{n}_d{d}_e{e}_c{c}_k{k}_s{seed}_z{noise}_l{latent}.pt"
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(2 * c, latent, generator=gen)
    lift = torch.randn(latent, d, generator=gen) / latent**0.5
    ytr = torch.arange(n) % c
    ftr = features(means, ytr, noise, lift, gen)
    n_test = max(n, 4 * k)
    yte = torch.arange(n_test) % c + c  # other classes, as metric learning tests
    fte = features(means, yte, noise, lift, gen)
    loss = ProxyNCAPP(c, e)
    if path.is_file():
        state = torch.load(path, weights_only=True)
        loss.load_state_dict(state["loss"])
        w, b, final, seconds = state["w"], state["b"], float(state["final"]), float(state["seconds"])
    else:
        torch.manual_seed(seed)
        # the reference recipe on a head: nn.Linear's init, Adam with eps 1, lr 4e-3 (head) and 400
        # (proxies), class-balanced batches of 8 classes x 4, until the epoch loss plateaus
        bound = 1 / d**0.5
        w = (2 * bound * torch.rand(e, d, generator=gen) - bound).requires_grad_(True)
        b = (2 * bound * torch.rand(e, generator=gen) - bound).requires_grad_(True)
        groups = [{"params": [w, b], "lr": 4e-3}, {"params": loss.parameters(), "lr": 400.0}]
        opt = torch.optim.Adam(groups, eps=1.0)
        history: list[float] = []
        t0 = time.perf_counter()
        by_class = [torch.nonzero(ytr == cls).flatten() for cls in range(c)]
        for _ in range(max_epochs):
            total, steps = 0.0, 0
            for _ in range(n // 32):
                cls = torch.randperm(c, generator=gen)[:8]
                idx = torch.cat(
                    [m[torch.randint(len(m), (4,), generator=gen)] for m in (by_class[i] for i in cls)]
                )
                value = loss(head(ftr[idx], w, b), ytr[idx])
                opt.zero_grad()
                value.backward()
                torch.nn.utils.clip_grad_value_([w, b], 10.0)
                opt.step()
                total, steps = total + float(value.detach()), steps + 1
            history.append(total / steps)
            if len(history) > 5 and abs(history[-5] - history[-1]) < plateau * 5 * history[-1]:
                break
        seconds = time.perf_counter() - t0
        w, b, final = w.detach(), b.detach(), history[-1]
        CACHE.mkdir(exist_ok=True)
        torch.save({"w": w, "b": b, "loss": loss.state_dict(), "final": final, "seconds": seconds}, path)
    loss.requires_grad_(False)
    with torch.no_grad():
        z = head(fte, w, b).numpy()
    nn = nearest_neighbours(z, yte.numpy())
    pairs = confusion_pairs(nn, yte.numpy(), k)
    return Trained(ConfusionTask.from_loss(loss), ftr, ytr, fte, yte, w, b, pairs, final, seconds)
