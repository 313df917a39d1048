"""Cleaned training labels, from a person's review or from a method's ranking, and what they did.

- :func:`from_review`: the decisions of a corrected-label CSV (the review page's export): ``accept``
  and ``change`` set ``new_label_id``, ``reject`` keeps the label, rows without a decision are left
  alone. The file must describe *this* training set: every ``old_label_id`` must equal the current
  label, else it came from another run and is refused (:mod:`eif.mislabel.review_file` checks the
  whole file; the clean stage runs it before any compute).
- :func:`from_ranking`: inspect the ``budget`` top-ranked samples and accept their weighted-kNN
  recommendation (Algorithm 1): what a person who trusts the suggestions does.
- :func:`outcome`: flips fixed (a mislabelled sample now has its clean label) and clean labels broken
  (a correct label changed), against the known clean labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eif.mislabel.review_file import DECISIONS, validate_review


@dataclass(frozen=True)
class Review:
    """A parsed review: ``labels`` (N,) int64 after the decisions, and how many of each decision."""

    labels: np.ndarray
    counts: dict[str, int]
    changed: np.ndarray  # int64 ids whose label the review changed


def from_review(
    path: Path, labels: np.ndarray, num_classes: int, class_names: Sequence[str] | None = None
) -> Review:
    """Apply the review at ``path`` to the current training ``labels`` (N,), see the module doc; the
    file is validated whole first (:func:`eif.mislabel.review_file.validate_review`)."""
    table = validate_review(path, labels, num_classes, class_names)
    ids = table["id"].to_numpy(np.int64)
    out = labels.copy()
    acting = table["decision"].to_numpy() != "reject"
    out[ids[acting]] = table.loc[acting, "new_label_id"].to_numpy(np.int64)
    decisions = table["decision"].to_numpy()
    counts = {d: int(np.count_nonzero(decisions == d)) for d in DECISIONS}
    return Review(out, counts, np.flatnonzero(out != labels).astype(np.int64))


def from_ranking(labels: np.ndarray, ranking: np.ndarray, recommended: np.ndarray, budget: int) -> np.ndarray:
    """Labels after accepting the recommendations ``recommended`` (Q,) of the first ``budget`` samples
    of ``ranking`` (Q >= budget, aligned with ``ranking[:Q]``)."""
    top = np.asarray(ranking[:budget], dtype=np.int64)
    out = labels.copy()
    out[top] = np.asarray(recommended[:budget], dtype=np.int64)
    return out


def outcome(new: np.ndarray, noisy: np.ndarray, clean: np.ndarray) -> dict[str, int]:
    """``flips_fixed``: mislabelled samples whose label is now the clean one; ``clean_broken``:
    correctly labelled samples whose label changed; ``changed``: all labels changed; ``flips_left``."""
    flipped = noisy != clean
    return {
        "changed": int((new != noisy).sum()),
        "flips_fixed": int((flipped & (new == clean)).sum()),
        "clean_broken": int((~flipped & (new != clean)).sum()),
        "flips_left": int((new != clean).sum() - (~flipped & (new != clean)).sum()),
    }
