"""Batched re-training of the embedding head W for many confusions at once (docs/protocol.md,
"Re-training").

Only the head weight W (E, D) changes; the trunk, head bias and loss proxies are frozen, so one
epoch's trunk features (the same for every re-training: same seed, same batches, same
augmentations) are computed once and every re-training is a function of W alone. H re-trainings
are one tensor W of shape (H, E, D): the embeddings of a batch are ``einsum("bd,hed->hbe")``, the
per-head losses are independent, so the gradient of their sum is each head's own gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from eif.retrain.adam import AdamConfig, AdamState, adam_step
from eif.utils.errors import require

log = logging.getLogger(__name__)

PerSample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``per_sample(z (H, B, E), y (B,)) -> (H, B)``: the metric loss of every sample under every head."""


@dataclass
class EpochBatches:
    """The re-training's batches of trunk features, in order (one or more epochs back to back).

    ``features`` float32 (M, D); ``labels`` int64 (M,) (the labels training sees); ``indices``
    int64 (M,) (positions in the training set); ``aug_seeds`` int64 (M,) (augmentation seeds, -1
    when no augmentation was applied); ``batch_ptr`` int64 (T+1,): batch t is rows
    ``batch_ptr[t]:batch_ptr[t+1]``.
    """

    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    aug_seeds: np.ndarray
    batch_ptr: np.ndarray

    @property
    def num_batches(self) -> int:
        return len(self.batch_ptr) - 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "features": self.features,
            "labels": self.labels,
            "indices": self.indices,
            "aug_seeds": self.aug_seeds,
            "batch_ptr": self.batch_ptr,
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> EpochBatches:
        return cls(*(np.asarray(a[k]) for k in ("features", "labels", "indices", "aug_seeds", "batch_ptr")))


def retrain_heads(
    w0: torch.Tensor,
    bias: torch.Tensor,
    weights: torch.Tensor,
    epoch: EpochBatches,
    per_sample: PerSample,
    optimizer: AdamConfig,
    clip_grad_value: float | None,
    device: torch.device | str = "cpu",
    heads_per_chunk: int | None = None,
    snapshots: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "re-train heads",
) -> torch.Tensor:
    """Re-train H copies of the head weight ``w0`` (E, D), copy h with sample weights ``weights[h]``.

    ``weights`` (H, N_train) is indexed by training-set position. Each step computes
    ``loss_h = mean_b(weights[h, i_b] * L(z_hb, y_b))`` (divides by the batch size, as the
    reference), clamps every gradient element to +-``clip_grad_value`` (``clip_grad_value_``; None:
    no clipping) and takes one Adam step with ``optimizer``, once per batch of ``epoch``.
    ``heads_per_chunk`` bounds memory (W, grad and two Adam moments per head); chunks run one after
    another, the heads inside a chunk together.
    Returns W' (H, E, D) on the CPU; with ``snapshots`` (numbers of steps, e.g. the ends of epochs)
    the weights after each of them instead, (S, H, E, D). ``progress``: a bar over the steps of all
    chunks, labelled ``desc``.
    """
    require(weights.ndim == 2, f"weights must be (heads, train samples), got {tuple(weights.shape)}")
    n_train = weights.shape[1]
    require(
        int(epoch.indices.max(initial=-1)) < n_train,
        f"epoch batches index sample {int(epoch.indices.max())} but weights cover {n_train} samples",
    )
    device = torch.device(device)
    feats = torch.as_tensor(epoch.features, dtype=torch.float32).to(device)
    labels = torch.as_tensor(epoch.labels, dtype=torch.long).to(device)
    index = torch.as_tensor(epoch.indices, dtype=torch.long).to(device)
    ptr = [int(p) for p in epoch.batch_ptr]
    w0 = w0.detach().to(device, torch.float32)
    bias = bias.detach().to(device, torch.float32)
    n_heads = weights.shape[0]
    chunk = n_heads if heads_per_chunk is None else max(1, int(heads_per_chunk))
    steps = len(ptr) - 1
    marks = sorted(set(snapshots)) if snapshots is not None else [steps]
    require(all(0 <= m <= steps for m in marks), f"snapshots must lie in [0, {steps}] steps, got {marks}")
    out: list[list[torch.Tensor]] = []
    n_chunks = -(-n_heads // chunk)
    bar = tqdm(total=n_chunks * marks[-1], desc=desc, unit="step", leave=False, disable=not progress)
    for start in range(0, n_heads, chunk):
        sw = weights[start : start + chunk].to(device, torch.float32)
        w = w0.expand(sw.shape[0], *w0.shape).clone()
        state = AdamState.zeros_like(w)
        grad = torch.empty_like(w)
        taken = [w.to("cpu", copy=True)] if marks[0] == 0 else []  # copies: w is updated in place
        for t in range(marks[-1]):
            f, y, i = feats[ptr[t] : ptr[t + 1]], labels[ptr[t] : ptr[t + 1]], index[ptr[t] : ptr[t + 1]]
            # Autograd only up to the head outputs z; dL/dW = dL/dz^T f is written into one buffer.
            z = torch.einsum("bd,hed->hbe", f, w).add_(bias).requires_grad_(True)
            loss = (sw[:, i] * per_sample(z, y)).mean(dim=1)  # (H,)
            (dz,) = torch.autograd.grad(loss.sum(), z)
            torch.matmul(dz.transpose(1, 2), f, out=grad)  # (H, E, D)
            if clip_grad_value is not None:
                grad.clamp_(-clip_grad_value, clip_grad_value)
            adam_step(w, grad, state, optimizer.lr, optimizer.betas, optimizer.eps)
            if t + 1 in marks:
                taken.append(w.to("cpu", copy=True))
            bar.update()
        out.append(taken)
    bar.close()
    stacked = torch.stack([torch.cat(parts) for parts in zip(*out)])  # (S, H, E, D)
    return stacked if snapshots is not None else stacked[0]
