"""Cleaned training labels, from a person's review or from a method's ranking, and what they did.

- :func:`from_review`: the decisions of a corrected-label CSV (the review page's export): ``accept``
  and ``change`` set ``new_label_id``, ``reject`` keeps the label, rows without a decision are left
  alone. The file must describe *this* training set: every ``old_label_id`` must equal the current
  label, else it came from another run and is refused.
- :func:`from_ranking`: inspect the ``budget`` top-ranked samples and accept their weighted-kNN
  recommendation (Algorithm 1): what a person who trusts the suggestions does.
- :func:`outcome`: flips fixed (a mislabelled sample now has its clean label) and clean labels broken
  (a correct label changed), against the known clean labels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eif.utils.errors import EifError, require

DECISIONS = ("accept", "reject", "change")
COLUMNS = ("id", "old_label_id", "new_label_id", "decision")


@dataclass(frozen=True)
class Review:
    """A parsed review: ``labels`` (N,) int64 after the decisions, and how many of each decision."""

    labels: np.ndarray
    counts: dict[str, int]
    changed: np.ndarray  # int64 ids whose label the review changed


def read_review(path: Path) -> pd.DataFrame:
    """The review CSV's rows with a decision, checked for the columns and values :func:`from_review`
    needs; one-line :class:`EifError` otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EifError(f"clean.labels: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EifError(f"clean.labels: cannot read {path}: {err}") from None
    try:
        table = pd.read_csv(io.StringIO(text), dtype={"decision": "string"})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise EifError(f"clean.labels: {path} is not a CSV file ({str(err).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    require(
        not missing, f"clean.labels: {path} lacks the column(s) {', '.join(missing)} (review page export)"
    )
    table = table[table["decision"].fillna("").str.strip() != ""].copy()
    table["decision"] = table["decision"].str.strip().str.lower()
    bad = sorted(set(table["decision"]) - set(DECISIONS))
    require(not bad, f"clean.labels: {path} has decision(s) {bad}; use one of {', '.join(DECISIONS)}")
    for col in ("id", "old_label_id"):
        require(
            pd.to_numeric(table[col], errors="coerce").notna().all(),
            f"clean.labels: {path} column {col} must hold integers",
        )
    acting = table["decision"] != "reject"
    require(
        pd.to_numeric(table.loc[acting, "new_label_id"], errors="coerce").notna().all(),
        f"clean.labels: {path}: every accept/change row needs an integer new_label_id",
    )
    return table


def from_review(path: Path, labels: np.ndarray, num_classes: int) -> Review:
    """Apply the review at ``path`` to the current training ``labels`` (N,), see the module doc."""
    table = read_review(path)
    ids = table["id"].astype(np.int64).to_numpy()
    n = labels.shape[0]
    require(
        ((ids >= 0) & (ids < n)).all(),
        f"clean.labels: {path} names training ids outside 0..{n - 1}: it belongs to another data set",
    )
    require(len(np.unique(ids)) == len(ids), f"clean.labels: {path} decides some training id twice")
    old = table["old_label_id"].astype(np.int64).to_numpy()
    wrong = np.flatnonzero(labels[ids] != old)
    if wrong.size:
        i = wrong[0]
        raise EifError(
            f"clean.labels: {path} says sample {ids[i]} has label {old[i]}, this run has {labels[ids[i]]} "
            f"({wrong.size} such rows): the file comes from another run or noise seed"
        )
    out = labels.copy()
    acting = table["decision"].to_numpy() != "reject"
    new = table.loc[acting, "new_label_id"].astype(np.int64).to_numpy()
    require(
        ((new >= 0) & (new < num_classes)).all(),
        f"clean.labels: {path} has new_label_id outside 0..{num_classes - 1}",
    )
    out[ids[acting]] = new
    counts = {d: int((table["decision"] == d).sum()) for d in DECISIONS}
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
