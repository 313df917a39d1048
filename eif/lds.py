"""The linear datamodeling score (LDS) and counterfactual removal for attribution methods on the head.

An attribution method predicts how a confusion's distance d moves when the training set changes:
with scores s_i (positive = harmful), training on a subset S should give a confusion d that rises
with -sum_{i in S} s_i (harmful samples present pull the pair together). The LDS of a method on one
confusion is the Spearman correlation, over M random subsets, between that prediction and the d
measured after re-training the head on each subset; a method's LDS is the mean over confusions
(Park et al., TRAK, 2023; dattri, 2024). Because only the head is re-trained, eif can afford these
counterfactuals by the hundred.

- :func:`subsets`: M random alpha-subsets of the N training samples, shared by all confusions.
- :func:`lds`: the mean Spearman over confusions, and :func:`bootstrap_interval` its interval when
  both subsets and confusions are resampled.
- :func:`noise_ceiling`: how well any prediction could do, given how much the measured d depends on
  the batch order.
- :func:`removal_weights`: drop each confusion's top-k harmful samples (or k random ones).

Spearman correlations are Pearson correlations of ranks (``scipy.stats.rankdata``), vectorised over
confusions; a test checks them against ``scipy.stats.spearmanr``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def subsets(n: int, m: int, alpha: float, seed: int) -> np.ndarray:
    """Membership (M, N) bool: M subsets of round(alpha * N) samples each, seeded."""
    rng = np.random.default_rng(seed)
    size = int(round(alpha * n))
    out = np.zeros((m, n), dtype=bool)
    for j in range(m):
        out[j, rng.choice(n, size, replace=False)] = True
    return out


def predictions(scores: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """(K, M): -sum of each confusion's scores over each subset (higher = d predicted larger)."""
    return -(np.asarray(scores, dtype=np.float64) @ membership.T.astype(np.float64))


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of every row of a with the same row of b (K, M) -> (K,); nan for a
    constant row."""
    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1), np.nan)


def lds(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean over confusions (rows) of the Spearman correlation across subsets (columns)."""
    return float(np.nanmean(_spearman_rows(predicted, measured)))


def bootstrap_interval(
    predicted: np.ndarray, measured: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of :func:`lds` when subsets (columns) and confusions (rows) are both
    resampled with replacement."""
    rng = np.random.default_rng(seed)
    k, m = predicted.shape
    values = np.empty(resamples)
    for r in range(resamples):
        rows, cols = rng.integers(0, k, k), rng.integers(0, m, m)
        values[r] = np.nanmean(_spearman_rows(predicted[np.ix_(rows, cols)], measured[np.ix_(rows, cols)]))
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def noise_ceiling(between_orders: float, orders: int) -> float:
    """The highest LDS that the batch-order noise of the measured d allows.

    ``between_orders`` r is the LDS-style correlation between the d measured with two batch orders
    on the same subsets; the target is d averaged over ``orders`` (S) orders. Treating the orders as
    parallel measurements of the order-free d, the target's reliability is S r / (1 + (S - 1) r)
    (Spearman-Brown), and no prediction correlates with it better than the square root of that
    (the attenuation bound). A ceiling, not a guarantee: ranks only approximately follow it."""
    r = max(float(between_orders), 0.0)
    return float(np.sqrt(orders * r / (1 + (orders - 1) * r))) if r > 0 else 0.0


def removal_weights(scores: np.ndarray, k: int, seed: int | None = None) -> np.ndarray:
    """Weights (K, N): 0 for each confusion's k most harmful samples (largest scores; with ``seed`` k
    random samples instead), 1 elsewhere."""
    scores = np.asarray(scores)
    out = np.ones(scores.shape, dtype=np.float32)
    if seed is None:
        drop = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        rng = np.random.default_rng(seed)
        drop = np.stack([rng.choice(scores.shape[1], k, replace=False) for _ in range(scores.shape[0])])
    np.put_along_axis(out, drop, 0.0, axis=1)
    return out
