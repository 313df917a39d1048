"""The re-training epoch's trunk features, computed once and shared by every re-training.

The trunk is frozen and in eval mode during re-training (BatchNorm uses its running statistics),
and every re-training uses the original model's seed, so all of them see the same batches with the
same augmentations. One pass over the sampler's batches with the train transform therefore gives
the exact inputs of the head for the whole epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import islice

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eif.data.config import BatchConfig
from eif.data.samplers import BalancedBatchSampler
from eif.retrain.head import EpochBatches

Batch = Sequence[tuple[int, int]]
"""One batch from ``BalancedBatchSampler``: (training index, augmentation seed) per sample."""


def epoch_batches(
    labels: np.ndarray, batch: BatchConfig, seed: int, epochs: int, max_per_epoch: int | None = None
) -> list[list[tuple[int, int]]]:
    """The sampler's batches of re-training epochs 0..epochs-1 under the original model's ``seed``
    (the same batches and augmentation seeds as the original training's first epochs); with
    ``max_per_epoch`` only each epoch's first ones (as ``train.max_batches_per_epoch``)."""
    return [
        b
        for epoch in range(epochs)
        for b in islice(
            BalancedBatchSampler(labels, batch.classes_per_batch, batch.samples_per_class, seed, epoch),
            max_per_epoch,
        )
    ]


def batches_from_indices(batches: Sequence[Batch], features: np.ndarray, labels: np.ndarray) -> EpochBatches:
    """The epoch in ``batches`` order on already cached features (``features=eval`` mode).

    ``features`` (N, D) and ``labels`` (N,) are indexed by training position; the augmentation
    seeds are kept for reference but not applied.
    """
    idx = np.array([i for b in batches for i, _ in b], dtype=np.int64)
    seeds = np.array([s for b in batches for _, s in b], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum([len(b) for b in batches])]).astype(np.int64)
    return EpochBatches(
        np.ascontiguousarray(features[idx], dtype=np.float32),
        np.asarray(labels, dtype=np.int64)[idx],
        idx,
        seeds,
        ptr,
    )


@torch.no_grad()
def augmented_epoch(
    trunk: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batches: Sequence[Batch],
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> EpochBatches:
    """Run ``trunk`` (e.g. ``Embedder.features`` in eval mode) over ``batches`` of ``dataset``.

    ``dataset[(i, seed)]`` must return ``(image, label, i)`` with the augmentation a pure function of
    ``seed`` (``ImageSet`` with the train transform), so the result is reproducible bit for bit on
    the same device. Returns features (M, D) in batch order.
    """
    batches = [list(b) for b in batches]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
    )
    feats, labels, index = [], [], []
    for x, y, i in loader:
        feats.append(trunk(x.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(y, dtype=torch.long))
        index.append(torch.as_tensor(i, dtype=torch.long))
    seeds = np.array([s for b in batches for _, s in b], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum([len(b) for b in batches])]).astype(np.int64)
    index_np = torch.cat(index).numpy()
    expected = np.array([i for b in batches for i, _ in b], dtype=np.int64)
    if not np.array_equal(index_np, expected):
        raise RuntimeError("data loader returned samples out of batch order")
    return EpochBatches(torch.cat(feats).numpy(), torch.cat(labels).numpy(), index_np, seeds, ptr)
