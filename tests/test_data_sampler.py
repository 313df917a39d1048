"""The class-balanced batch sampler: composition, determinism, resumption, epoch length."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from eif.data.samplers import BalancedBatchSampler
from eif.utils.errors import EifError


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    """Labels with ``counts[c]`` images of class ``c``, in a shuffled order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def test_batch_composition() -> None:
    labels = _labels([10 + c % 7 for c in range(20)])
    s = BalancedBatchSampler(labels, 8, 4, seed=0, epoch=0)
    batches = list(s)
    assert len(batches) == len(s) == s.num_batches == (labels.size - 1) // 32
    for batch in batches:
        idx = np.asarray([i for i, _ in batch])
        assert idx.shape == (32,)
        blocks = labels[idx].reshape(8, 4)
        assert np.all(blocks == blocks[:, :1])  # 4 consecutive entries per class
        assert np.unique(blocks[:, 0]).size == 8  # 8 distinct classes
        for row in idx.reshape(8, 4):
            assert np.unique(row).size == 4  # no repeats when the class has >= 4 images


def test_takes_walk_a_shuffled_list_until_exhausted() -> None:
    """Class lists of 12 with 4 per take: every 3 consecutive takes of a class cover it exactly."""
    labels = _labels([12] * 10)
    takes: dict[int, list[np.ndarray]] = {c: [] for c in range(10)}
    for batch in BalancedBatchSampler(labels, 3, 4, seed=5, epoch=2):
        for row in np.asarray([i for i, _ in batch]).reshape(3, 4):
            takes[int(labels[row[0]])].append(row)
    for c, rows in takes.items():
        members = np.flatnonzero(labels == c)
        for k in range(len(rows) // 3):
            np.testing.assert_array_equal(np.sort(np.concatenate(rows[3 * k : 3 * k + 3])), members)


def test_small_class_wraps_around() -> None:
    labels = _labels([2] + [6] * 9)
    seen = 0
    for batch in BalancedBatchSampler(labels, 5, 3, seed=1, epoch=0):
        for row in np.asarray([i for i, _ in batch]).reshape(5, 3):
            if labels[row[0]] == 0:
                seen += 1
                assert set(row.tolist()) == set(np.flatnonzero(labels == 0).tolist())
    assert seen > 0


@pytest.mark.parametrize("n,expect", [(64, 1), (65, 2), (95, 2), (96, 2), (97, 3)])
def test_epoch_length_follows_reference_stop_rule(n: int, expect: int) -> None:
    # The reference yields while count + batch_size < N, with count += batch_size after each batch.
    count, batches = 0, 0
    while count + 32 < n:
        batches, count = batches + 1, count + 32
    assert batches == expect
    labels = np.arange(n) % 8
    assert len(BalancedBatchSampler(labels, 8, 4, seed=0, epoch=0)) == expect


def test_determinism_per_seed_and_epoch() -> None:
    labels = _labels([9] * 30)
    a = list(BalancedBatchSampler(labels, 6, 3, seed=11, epoch=4))
    b = list(BalancedBatchSampler(labels, 6, 3, seed=11, epoch=4))
    assert a == b
    assert a != list(BalancedBatchSampler(labels, 6, 3, seed=11, epoch=5))
    assert a != list(BalancedBatchSampler(labels, 6, 3, seed=12, epoch=4))


def test_start_batch_equals_slicing() -> None:
    labels = _labels([7] * 25)
    full = list(BalancedBatchSampler(labels, 5, 4, seed=2, epoch=1))
    for k in (0, 1, 3, len(full)):
        s = BalancedBatchSampler(labels, 5, 4, seed=2, epoch=1, start_batch=k)
        assert list(s) == full[k:] and len(s) == len(full) - k and s.num_batches == len(full)


def test_aug_seeds_depend_on_batch_only() -> None:
    labels = _labels([8] * 12)
    s = BalancedBatchSampler(labels, 4, 2, seed=3, epoch=0)
    batches = list(s)
    seeds = np.asarray([[sd for _, sd in b] for b in batches])
    assert np.unique(seeds).size == seeds.size  # distinct within and across batches
    assert seeds.min() >= 0 and seeds.max() < 2**63
    # A sampler over other labels, same (seed, epoch): same seeds at the same batch positions.
    other = BalancedBatchSampler(_labels([5] * 40, seed=9), 4, 2, seed=3, epoch=0)
    np.testing.assert_array_equal(other.aug_seeds(2), seeds[2])
    assert not np.array_equal(BalancedBatchSampler(labels, 4, 2, seed=3, epoch=1).aug_seeds(2), seeds[2])


def test_classes_drawn_uniformly() -> None:
    labels = _labels([10] * 10 + [40] * 10)  # class sizes must not bias which classes are drawn
    counts = np.zeros(20, dtype=np.int64)
    for epoch in range(20):
        for batch in BalancedBatchSampler(labels, 4, 2, seed=0, epoch=epoch):
            counts += np.bincount(labels[[i for i, _ in batch][::2]], minlength=20)
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize(
    "labels,cpb,spc,start,message",
    [
        (np.arange(5).repeat(10), 8, 4, 0, "the training set has 5 classes, fewer than classes_per_batch=8"),
        (np.arange(8).repeat(4), 8, 4, 0, "has 32 images, too few for one batch of 32"),
        (np.arange(8).repeat(10), 8, 4, 3, r"start_batch must be in \[0, 2\], got 3"),
        (np.arange(8).repeat(10), 8, 0, 0, "samples_per_class >= 1"),
    ],
)
def test_errors(labels: np.ndarray, cpb: int, spc: int, start: int, message: str) -> None:
    with pytest.raises(EifError, match=message):
        BalancedBatchSampler(labels, cpb, spc, seed=0, epoch=0, start_batch=start)
