"""Relabel accuracy (paper Table 2) and the human-review table for Algorithm 1's suggestions."""

from __future__ import annotations

import numpy as np
import pandas as pd


def top2(soft: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most and second most voted labels of each row of ``soft`` (Q, C); ties go to the lower label."""
    order = np.argsort(-soft, axis=1, kind="stable")
    return order[:, 0], order[:, 1]


def second_label_prediction(soft: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The reference's rule: the top-1 label, unless it equals the current (noisy) label, then the 2nd."""
    first, second = top2(soft)
    return np.where(first == np.asarray(current), second, first)


def relabel_accuracy(
    soft: np.ndarray, queries: np.ndarray, current: np.ndarray, clean: np.ndarray, flipped: np.ndarray
) -> dict[str, float]:
    """Table 2 accuracy of the recommendations ``soft`` (Q, C) for training samples ``queries`` (Q,).

    ``current`` / ``clean``: (N,) noisy and clean training labels; ``flipped``: indices of true flips.
    Denominator: the true flips among ``queries``. ``strict``: top-1 == clean label.
    ``second_label``: as the reference, a top-1 equal to the noisy label is replaced by the 2nd label.
    """
    queries = np.asarray(queries, dtype=np.int64)
    hit = np.isin(queries, np.asarray(flipped, dtype=np.int64))
    n = int(hit.sum())
    if n == 0:
        return {"flips_in_set": 0, "strict": float("nan"), "second_label": float("nan")}
    target = np.asarray(clean)[queries[hit]]
    strict = top2(soft[hit])[0] == target
    second = second_label_prediction(soft[hit], np.asarray(current)[queries[hit]]) == target
    return {"flips_in_set": n, "strict": float(strict.mean()), "second_label": float(second.mean())}


def review_table(
    queries: np.ndarray,
    soft: np.ndarray,
    current: np.ndarray,
    paths: list[str] | None,
    flag_score: np.ndarray,
) -> pd.DataFrame:
    """The CSV a human reviews: one row per query, most harmful (highest ``flag_score``) first.

    ``paths``: image paths of the training set, or ``None`` for in-memory data ("index:<i>").
    """
    queries = np.asarray(queries, dtype=np.int64)
    rec = soft.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "sample_id": queries,
            "image": [paths[i] for i in queries] if paths is not None else [f"index:{i}" for i in queries],
            "current_label": np.asarray(current)[queries],
            "recommended_label": rec,
            "probability": soft[np.arange(queries.size), rec],
            "score": np.asarray(flag_score, dtype=np.float64),
        }
    )
    frame["changes_label"] = frame.current_label != frame.recommended_label
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
