"""The trainer's batch path: whole seeded batches equal the per-sample seeded items they replace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from eif.data.base import ArrayImageSet
from eif.data.samplers import BalancedBatchSampler
from eif.data.transforms import build_transform
from eif.training.batches import SeededBatches
from eif.utils.errors import EifError

FASHION = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "fashion_mnist.yaml").transforms


@pytest.fixture(scope="module")
def images() -> ArrayImageSet:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    return ArrayImageSet(pixels, np.arange(60) % 5, build_transform(FASHION, "train"))


def test_batch_equals_stacked_seeded_items(images: ArrayImageSet) -> None:
    items = [(7, 11), (3, 2**62), (7, 12), (59, 0)]
    before = torch.random.get_rng_state()
    x, y = SeededBatches(images)[items]
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is untouched
    expect = [images[item] for item in items]
    assert torch.equal(x, torch.stack([e[0] for e in expect]))
    assert y.dtype == torch.int64 and y.tolist() == [e[1] for e in expect]


def test_loader_batches_reproduce_across_workers_and_resume(images: ArrayImageSet) -> None:
    def epoch(workers: int, start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sampler = BalancedBatchSampler(images.labels, 5, 2, seed=4, epoch=1, start_batch=start)
        loader = DataLoader(SeededBatches(images), sampler=sampler, batch_size=None, num_workers=workers)
        return list(loader)

    full = epoch(0, 0)
    sampler = BalancedBatchSampler(images.labels, 5, 2, seed=4, epoch=1)
    assert len(full) == sampler.num_batches and full[0][0].shape == (10, 1, 28, 28)
    for (x, y), items in zip(full, sampler, strict=True):  # what the DataLoader of single items gave
        assert torch.equal(x, torch.stack([images[item][0] for item in items]))
        assert torch.equal(y, torch.tensor([images[item][1] for item in items]))
    resumed = epoch(1, 2)  # another process, mid-epoch start: the same augmented batches
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[2:], resumed, strict=True)
    )


def test_needs_a_transform(images: ArrayImageSet) -> None:
    with pytest.raises(EifError, match="no transform"):
        SeededBatches(images.with_transform(None))
