"""Training batches with seeded augmentation, fetched and stacked in one call per batch.

:class:`SeededBatches` wraps a training :class:`~eif.data.base.ImageSet`; indexing it with one batch
of :class:`~eif.data.samplers.BalancedBatchSampler`, ``[(index, aug_seed), ...]``, gives ``(x, y)``:
``x`` float (B, C, H, W) equal to stacking ``images[(index, aug_seed)][0]`` over the batch, ``y``
int64 (B,) the training labels. Every sample's transform runs right after torch's CPU generator is
seeded with its ``aug_seed``, as in :meth:`ImageSet.__getitem__`, so a batch stays a pure function of
``(seed, epoch, batch)``. What differs is the cost: the global generator is saved and restored once
per batch instead of once per sample (``torch.random.fork_rng`` costs ~40 us, a tenth of a 28 x 28
image's augmentation), and the batch is stacked here instead of by the DataLoader's per-sample collate.
A DataLoader takes it with ``batch_size=None`` and the batch sampler as its ``sampler``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from eif.data.base import ImageSet
from eif.utils.errors import EifError


class SeededBatches(Dataset):
    """Whole augmented batches of ``images`` (which needs a transform), keyed by the sampler's batches."""

    def __init__(self, images: ImageSet) -> None:
        if images.transform is None:
            raise EifError("this image set has no transform; call with_transform(build_transform(...)) first")
        self.images, self.transform = images, images.transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, items: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[(index, aug_seed), ...]`` (B entries) -> images float (B, C, H, W), labels int64 (B,)."""
        images, transform = self.images, self.transform
        xs = []
        with torch.random.fork_rng(devices=[]):
            for i, seed in items:
                torch.default_generator.manual_seed(int(seed))
                xs.append(transform(images.load(int(i))))
        index = np.fromiter((i for i, _ in items), dtype=np.int64, count=len(items))
        return torch.stack(xs), torch.from_numpy(images.labels[index])
