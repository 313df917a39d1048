# pyright: strict
"""Ranked helpful / harmful index lists, stored ragged (concatenated values plus offsets) for numpy."""

from __future__ import annotations

import numpy as np


def split_by_sign(scores: np.ndarray) -> dict[str, np.ndarray]:
    """For scores (K, N): ``harmful`` (score > 0) and ``helpful`` (score < 0) training indices of every
    confusion, each ordered by |score| descending (ties by index), concatenated over k, with
    ``harmful_offsets`` / ``helpful_offsets`` (K+1,): confusion k's list is ``harmful[off[k]:off[k+1]]``."""
    scores = np.asarray(scores)
    order = np.argsort(-np.abs(scores), axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, 1)
    out: dict[str, np.ndarray] = {}
    for name, mask in (("harmful", ranked > 0), ("helpful", ranked < 0)):
        out[name] = order[mask].astype(np.int64)  # row-major: confusion by confusion, in rank order
        out[f"{name}_offsets"] = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    return out
