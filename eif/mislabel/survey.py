"""The field study (paper Table 5): which training classes would Algorithm 1 relabel, and how.

For every class ``c`` with ``n_c`` samples, ``p_c`` = fraction of them whose weighted-kNN argmax is
not ``c``. Classes with ``p_c >= 0.10`` are *centralized* (suggestions lean to one class) or
*diversified*; ``0 < p_c <= 0.05`` *individual*; ``0.05 < p_c < 0.10`` *others*; ``p_c = 0`` none.
Two rules split centralized from diversified:

* ``reference`` (the code behind Table 5): centralized if the most frequent *other* relabel class
  holds at least ``0.9 * p_c`` of the class (the reference reads index [1] of the sorted relabel
  frequencies, which is the same thing whenever the class keeps its own label for most samples).
* ``entropy`` (the paper's text): centralized if the entropy (natural log) of the relabel-class
  distribution, i.e. the other classes the relabelled samples go to, normalised to sum 1, is below
  ``th_H = 0.35``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from eif.utils.errors import require

CATEGORIES = ("centralized", "diversified", "individual", "others")


def class_details(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> pd.DataFrame:
    """Per class: ``n``, ``relabelled``, ``p``, ``top_other`` (the most frequent other relabel class,
    -1 if none), ``top_other_count``, ``top_other_frac`` (its share of the class) and ``entropy`` of
    the relabel classes.

    ``labels``, ``predicted``: int (N,) current labels and weighted-kNN argmax labels.
    """
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    n = np.bincount(labels, minlength=num_classes)
    moved = labels != predicted
    # Sparse (C, C) relabel counts: InShop has 3,997 classes, a dense matrix would be 128 MB.
    m = sparse.coo_matrix(
        (np.ones(int(moved.sum())), (labels[moved], predicted[moved])), shape=(num_classes, num_classes)
    ).tocsr()
    m.sum_duplicates()
    relabelled = np.asarray(m.sum(axis=1)).ravel()
    top_frac = np.asarray(m.max(axis=1).todense()).ravel()
    top_cls = np.where(relabelled > 0, np.asarray(m.argmax(axis=1)).ravel(), -1)
    rows = np.repeat(np.arange(num_classes), np.diff(m.indptr))
    q = m.data / relabelled[rows]
    entropy = np.bincount(rows, weights=-q * np.log(q), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, relabelled / np.maximum(n, 1), np.nan)
        frac = np.where(n > 0, top_frac / np.maximum(n, 1), np.nan)
    return pd.DataFrame(
        {
            "class": np.arange(num_classes),
            "n": n,
            "relabelled": relabelled.astype(np.int64),
            "p": p,
            "top_other": top_cls,
            "top_other_count": top_frac.astype(np.int64),
            "top_other_frac": frac,
            "entropy": entropy,
        }
    )


def categorise(details: pd.DataFrame, rule: str = "reference", th_h: float = 0.35) -> pd.Series:
    """Category of each class in ``details`` (see the module doc); ``""`` for classes without suggestions."""
    require(rule in ("reference", "entropy"), f"survey.rule must be reference or entropy, got {rule!r}")
    # Thresholds compared in integer counts (10*r >= n means p >= 0.10), so boundary cases such as
    # 18 of 100 vs 0.9 * 0.2 do not hinge on floating-point rounding.
    n, r = details.n.to_numpy(np.int64), details.relabelled.to_numpy(np.int64)
    if rule == "reference":
        central = 10 * details.top_other_count.to_numpy(np.int64) >= 9 * r
    else:
        central = details.entropy.to_numpy() < th_h
    big, small = 10 * r >= n, 20 * r <= n
    out = np.select(
        [(r > 0) & big, (r > 0) & small, (r > 0) & ~big & ~small],
        [np.where(central, "centralized", "diversified"), "individual", "others"],
        default="",
    )
    return pd.Series(out, index=details.index, name="category")


def table5(details: pd.DataFrame, categories: pd.Series) -> pd.DataFrame:
    """One Table 5 row: #class, classes with a suggestion, the four category counts, and the share of
    instances to relabel both over all training samples and over the classes with a suggestion
    (the reference's denominator, likely behind the abstract's 4.4/6.6/17.7%)."""
    present = details.n > 0
    with_sugg = details.relabelled > 0
    moved = details.relabelled.sum()
    counts = categories[present].value_counts()
    return pd.DataFrame(
        [
            {
                "classes": int(present.sum()),
                "total": int(with_sugg.sum()),
                **{c: int(counts.get(c, 0)) for c in CATEGORIES},
                "relabel_share_all": float(moved / details.n.sum()),
                "relabel_share_suggested_classes": float(moved / max(details.n[with_sugg].sum(), 1)),
            }
        ]
    )
