"""Rankings of training samples for mislabel detection and their detection curves (paper Fig. 2).

A ranking is a permutation of ``0..N-1``: the order in which a human would inspect the training
set. The detection curve after inspecting ``i`` samples is the fraction of the true flips found.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eif.utils.errors import require

RECALL_AT = (0.10, 0.20, 0.50)


def descending(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score (stable: ties keep index order). For influence scores (positive =
    harmful) this is the reference's order: harmful first, helpful last."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def random_ranking(n: int, seed: int) -> np.ndarray:
    """A seeded random inspection order (the random baseline)."""
    return np.random.default_rng(seed).permutation(n)


def detection_curve(order: np.ndarray, flipped: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``, both float64 (N+1,): fraction inspected and fraction of flips found, from (0, 0).

    ``order``: permutation of ``0..n-1``; ``flipped``: indices of the truly mislabelled samples.
    """
    order = np.asarray(order)
    require(
        order.shape == (n,) and np.array_equal(np.sort(order), np.arange(n)),
        f"a ranking must be a permutation of the {n} training indices",
    )
    require(len(flipped) > 0, "detection curve needs at least one flipped sample")
    is_flip = np.zeros(n, dtype=bool)
    is_flip[np.asarray(flipped, dtype=np.int64)] = True
    found = np.concatenate([[0], np.cumsum(is_flip[order])])
    return np.arange(n + 1) / n, found / is_flip.sum()


def curve_area(y: np.ndarray) -> float:
    """Area under the step curve ``y`` (N+1 points from :func:`detection_curve`), in [0, 1].

    Each inspected sample spans 1/N of the x axis at the value reached after inspecting it, so a
    flip found at 0-based position ``p`` adds ``(N - p) / (m N)``; random order gives about 0.5.
    """
    return float(np.mean(y[1:]))


def recall_at(y: np.ndarray, fraction: float) -> float:
    """Fraction of flips found after inspecting ``round(fraction * N)`` samples."""
    n = y.size - 1
    return float(y[int(round(fraction * n))])


def summarise(rankings: dict[str, np.ndarray], flipped: np.ndarray, n: int) -> tuple[pd.DataFrame, dict]:
    """One row per ranking: area and recall at 10/20/50% inspected; plus the curves ``{name: (x, y)}``."""
    rows, curves = [], {}
    for name, order in rankings.items():
        x, y = detection_curve(order, flipped, n)
        curves[name] = (x, y)
        rows.append(
            {
                "ranking": name,
                "area": curve_area(y),
                **{f"recall@{int(f * 100)}%": recall_at(y, f) for f in RECALL_AT},
            }
        )
    return pd.DataFrame(rows), curves


def cleanlab_rankings(labels: np.ndarray, pred_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Two cleanlab baselines on out-of-sample probabilities (N, C).

    ``cleanlab_quality``: ascending ``get_label_quality_scores`` (self-confidence), worst first.
    ``cleanlab_issues``: the samples ``find_label_issues`` flags (ranked by self-confidence), then
    all others by ascending quality.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    quality = get_label_quality_scores(labels, pred_probs)
    by_quality = np.argsort(quality, kind="stable")
    # n_jobs=1: cleanlab's default forks a multiprocessing pool, which can deadlock in a process that
    # runs threads (the W&B logger's) and then hangs on exit (a stuck worker ignores the SIGTERM that
    # the pool sends, since it inherited eif's handler). The result does not depend on n_jobs.
    issues = np.asarray(
        find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1),
        dtype=np.int64,
    )
    rest = by_quality[~np.isin(by_quality, issues)]
    return {"cleanlab_quality": by_quality, "cleanlab_issues": np.concatenate([issues, rest])}
