"""LDS re-training protocols: how the head is re-trained on each subset (``lds.protocols``).

A protocol turns sample weights (H, N) (one row per subset) and a batch-order seed into re-trained
heads at one or more horizons. Protocols are found by name in :data:`PROTOCOLS`; a new one (e.g. the
whole network re-trained from scratch) is one class plus one entry there.

- ``warm_start``: the head weight W re-trained from the trained W0 with the Table 1 re-training
  recipe (Adam lr 4e-5, clipping; bias and proxies frozen), snapshots after each horizon (epochs).
- ``scratch``: the head (W, b) and the loss's proxies re-trained from a fresh initialisation with
  the train stage's recipe for them, for the train stage's epochs (TRAK's definition of re-training,
  on the cached trunk features).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from eif.data.config import BatchConfig
from eif.losses.base import MetricLoss
from eif.retrain.adam import AdamConfig
from eif.retrain.features import batches_from_indices, epoch_batches
from eif.retrain.head import retrain_heads
from eif.retrain.labels import WARM_START, protocol_title
from eif.retrain.scratch import HeadRecipe, train_heads
from eif.utils.seed import derive_seed


@dataclass(frozen=True)
class Recipes:
    """Every protocol's settings: ``horizons`` (warm start, epochs from W0), the Table 1 re-training
    optimiser and clipping (warm start), the train stage's head recipe (scratch)."""

    horizons: tuple[int, ...]
    optimizer: AdamConfig
    clip_grad_value: float | None
    head: HeadRecipe


@dataclass
class Context:
    """What a protocol re-trains: the trained head ``w0`` (E, D) and ``bias`` (E,), the trained
    ``loss``, ``fresh_loss()`` (the loss with newly initialised parameters, under the current torch
    RNG), the cached training ``features`` (N, D) and ``labels`` (N,), the sampler's ``batch``."""

    w0: torch.Tensor
    bias: torch.Tensor
    loss: MetricLoss
    fresh_loss: Callable[[], MetricLoss]
    features: np.ndarray
    labels: np.ndarray
    batch: BatchConfig
    device: torch.device
    heads_per_chunk: int | None
    progress: bool


Heads = list[tuple[int, torch.Tensor, torch.Tensor]]
"""Per horizon: (epochs, W (H, E, D), bias (E,) shared or (H, E) per head)."""


class Protocol(ABC):
    name: str

    @property
    def title(self) -> str:
        """How tables and logs name it."""
        return protocol_title(self.name)

    @abstractmethod
    def horizons(self) -> list[int]:
        """The horizons (epochs) this protocol reports."""

    @abstractmethod
    def retrain(self, ctx: Context, weights: torch.Tensor, order_seed: int, desc: str) -> Heads:
        """Re-train one head per row of ``weights`` (H, N) under batch order ``order_seed``."""


class WarmStart(Protocol):
    name = WARM_START

    def __init__(self, r: Recipes) -> None:
        self.r = r

    def horizons(self) -> list[int]:
        return list(self.r.horizons)

    def retrain(self, ctx: Context, weights: torch.Tensor, order_seed: int, desc: str) -> Heads:
        per_epoch = len(epoch_batches(ctx.labels, ctx.batch, order_seed, 1))
        epoch = batches_from_indices(
            epoch_batches(ctx.labels, ctx.batch, order_seed, max(self.r.horizons)), ctx.features, ctx.labels
        )
        ws = retrain_heads(
            ctx.w0,
            ctx.bias,
            weights,
            epoch,
            ctx.loss.per_sample,
            self.r.optimizer,
            self.r.clip_grad_value,
            ctx.device,
            ctx.heads_per_chunk,
            snapshots=[h * per_epoch for h in self.r.horizons],
            progress=ctx.progress,
            desc=desc,
        )  # (S, H, E, D)
        return [(h, ws[i], ctx.bias.cpu()) for i, h in enumerate(self.r.horizons)]


class Scratch(Protocol):
    name = "scratch"

    def __init__(self, r: Recipes) -> None:
        self.r = r.head

    def horizons(self) -> list[int]:
        return [self.r.epochs]

    def retrain(self, ctx: Context, weights: torch.Tensor, order_seed: int, desc: str) -> Heads:
        with torch.random.fork_rng(devices=[]):
            # one fresh initialisation per batch order, shared by its subsets (as nn.Linear and the
            # loss initialise them when the model is built)
            torch.manual_seed(derive_seed(order_seed, 7919))
            e, d = ctx.w0.shape
            head = nn.Linear(d, e)
            loss = ctx.fresh_loss()
        batches = epoch_batches(
            ctx.labels, ctx.batch, order_seed, self.r.epochs, self.r.max_batches_per_epoch
        )
        epoch = batches_from_indices(batches, ctx.features, ctx.labels)
        w, b = train_heads(
            head.weight.detach(),
            head.bias.detach(),
            loss,
            weights,
            epoch,
            self.r,
            ctx.device,
            ctx.heads_per_chunk,
            ctx.progress,
            desc,
        )
        return [(self.r.epochs, w, b)]


PROTOCOLS: dict[str, Callable[[Recipes], Protocol]] = {"warm_start": WarmStart, "scratch": Scratch}
"""The LDS re-training protocols by name (``lds.protocols``)."""
