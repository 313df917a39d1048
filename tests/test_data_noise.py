"""Label noise: the reference's shift rule, the uniform rule, validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from eif.data.noise import inject_noise
from eif.utils.errors import EifError


def _reference_shift(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What the reference does, through NumPy's global RNG (state restored afterwards)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        idx = np.random.choice(len(labels), int(fraction * len(labels)), replace=False)
    finally:
        np.random.set_state(state)
    out = labels.copy()
    top = labels.max()
    out[idx] = np.where(labels[idx] + 5 > top, labels[idx] - 5, labels[idx] + 5)
    return out, idx


@pytest.mark.parametrize(
    "n,fraction,seed,expect_k",
    [(5864, 0.1, 0, 586), (8054, 0.1, 3, 805), (25882, 0.1, 4, 2588), (5864, 0.01, 3, 58)],
)
def test_shift_matches_reference_stream(n: int, fraction: float, seed: int, expect_k: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, 100, size=n))
    noisy, flipped = inject_noise(labels, fraction, "shift", seed, 100)
    ref_noisy, ref_idx = _reference_shift(labels, fraction, seed)
    assert flipped.size == expect_k and flipped.dtype == np.int64
    np.testing.assert_array_equal(flipped, np.sort(ref_idx))
    np.testing.assert_array_equal(noisy, ref_noisy)
    assert np.all(noisy[flipped] != labels[flipped]) and np.all(noisy[flipped] >= 0) and np.all(noisy < 100)
    keep = np.setdiff1d(np.arange(n), flipped)
    np.testing.assert_array_equal(noisy[keep], labels[keep])
    np.testing.assert_array_equal(np.abs(noisy[flipped] - labels[flipped]), 5)


def test_shift_boundary_classes() -> None:
    labels = np.arange(100).repeat(4)
    noisy, flipped = inject_noise(labels, 0.49, "shift", 1, 100)
    y, z = labels[flipped], noisy[flipped]
    np.testing.assert_array_equal(z[y <= 94], y[y <= 94] + 5)
    np.testing.assert_array_equal(z[y >= 95], y[y >= 95] - 5)
    assert (y >= 95).any()


def test_uniform_never_keeps_label_and_is_uniform() -> None:
    c = 5
    labels = np.arange(c).repeat(4000)
    noisy, flipped = inject_noise(labels, 0.4, "uniform", 7, c)
    assert flipped.size == 8000 and np.all(np.diff(flipped) > 0)
    assert np.all(noisy[flipped] != labels[flipped])
    keep = np.setdiff1d(np.arange(labels.size), flipped)
    np.testing.assert_array_equal(noisy[keep], labels[keep])
    # The offset (new - old) mod C is uniform over 1..C-1.
    offsets = (noisy[flipped] - labels[flipped]) % c
    counts = np.bincount(offsets, minlength=c)
    assert counts[0] == 0
    assert stats.chisquare(counts[1:]).pvalue > 1e-3
    # Same subset as the shift rule (both draw it first from RandomState(seed)).
    assert np.array_equal(flipped, inject_noise(np.arange(10).repeat(2000), 0.4, "shift", 7, 10)[1])


def test_deterministic_and_seed_dependent() -> None:
    labels = np.arange(10).repeat(50)
    a = inject_noise(labels, 0.1, "uniform", 3, 10)
    b = inject_noise(labels, 0.1, "uniform", 3, 10)
    c = inject_noise(labels, 0.1, "uniform", 4, 10)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])


def test_zero_fraction_is_identity() -> None:
    labels = np.arange(3).repeat(3)
    noisy, flipped = inject_noise(labels, 0.0, "shift", 0, 3)
    np.testing.assert_array_equal(noisy, labels)
    assert flipped.shape == (0,) and flipped.dtype == np.int64


@pytest.mark.parametrize(
    "fraction,rule,classes,message",
    [
        (0.5, "shift", 100, r"noise\.fraction must be in \[0, 0\.5\), got 0\.5"),
        (-0.01, "uniform", 100, r"noise\.fraction must be in \[0, 0\.5\), got -0\.01"),
        (0.1, "flip", 100, "noise.rule must be one of shift, uniform, got 'flip'"),
        (
            0.1,
            "shift",
            9,
            "rule 'shift' .* needs at least 10 training classes, got 9; use noise.rule=uniform",
        ),
        (0.1, "uniform", 1, "rule 'uniform' needs at least 2 training classes, got 1"),
    ],
)
def test_validation(fraction: float, rule: str, classes: int, message: str) -> None:
    with pytest.raises(EifError, match=message):
        inject_noise(np.zeros(100, dtype=np.int64), fraction, rule, 0, classes)


def test_labels_out_of_range() -> None:
    with pytest.raises(EifError, match=r"labels must lie in 0\.\.4, got 0\.\.5"):
        inject_noise(np.arange(6), 0.1, "uniform", 0, 5)
