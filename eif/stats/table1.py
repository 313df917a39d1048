"""Table 1 of the paper: does re-training on EIF's samples separate confusions more than IF's?

For each confusion the re-training stage measures Δd = d(θ') − d(θ0) (larger = better separated)
for both methods. H1: mean Δd_EIF > mean Δd_IF.
- pairs: paired t-test (``scipy.stats.ttest_rel(eif, if, alternative="greater")``) over the first
  K pairs, for each K;
- groups: Wilcoxon signed-rank test (``scipy.stats.wilcoxon(eif - if, alternative="greater")``,
  scipy's exact distribution where it uses it: n <= 50 without ties or zeros) over the first M
  groups, for each M.
"Average improvement" is mean(Δd_EIF − Δd_IF) over the same prefix. A prefix longer than the
number of confusions available is reported as ``not enough confusions``, never shrunk.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from eif.utils.errors import require

OK = "ok"
NOT_ENOUGH = "not enough confusions"
DEGENERATE = "degenerate (no variation in the differences)"
TESTS = {"pairs": "paired t-test", "groups": "Wilcoxon signed-rank"}


def compare(
    kind: str, delta_eif: Sequence[float], delta_if: Sequence[float], sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """One row per prefix size n in ``sizes`` for ``kind`` "pairs" (t-test) or "groups" (Wilcoxon).

    Row keys: kind, test, n, available, status, improvement (mean Δd_EIF − Δd_IF), statistic,
    pvalue (None unless status is ok; NaN p-values become None with status degenerate).
    """
    require(kind in TESTS, f"kind must be one of {sorted(TESTS)}, got {kind!r}")
    eif = np.asarray(delta_eif, dtype=np.float64)
    base = np.asarray(delta_if, dtype=np.float64)
    require(
        eif.shape == base.shape and eif.ndim == 1,
        f"Δd arrays must be 1-D and aligned, got {eif.shape} and {base.shape}",
    )
    rows = []
    for n in sizes:
        n = int(n)
        row: dict[str, Any] = {
            "kind": kind,
            "test": TESTS[kind],
            "n": n,
            "available": len(eif),
            "status": NOT_ENOUGH,
            "improvement": None,
            "statistic": None,
            "pvalue": None,
        }
        if n <= len(eif) and n >= 2:
            a, b = eif[:n], base[:n]
            row["improvement"] = float(np.mean(a - b))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # zero variance / all-zero differences
                res = (
                    stats.ttest_rel(a, b, alternative="greater")
                    if kind == "pairs"
                    else stats.wilcoxon(a - b, alternative="greater")
                )
            p, s = float(res.pvalue), float(res.statistic)
            # scipy's Wilcoxon returns p = 1 when every difference is zero; that is no test at all.
            ok = math.isfinite(p) and not (kind == "groups" and not np.any(a != b))
            row.update(
                status=OK if ok else DEGENERATE,
                pvalue=p if ok else None,
                statistic=s if math.isfinite(s) else None,
            )
        rows.append(row)
    return rows


def summary_keys(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Flat run-summary values, e.g. ``table1/pairs/K=30/improvement`` and ``.../pvalue``."""
    out: dict[str, float] = {}
    for r in rows:
        prefix = f"table1/{r['kind']}/{'K' if r['kind'] == 'pairs' else 'M'}={r['n']}"
        for key in ("improvement", "pvalue"):
            if r[key] is not None:
                out[f"{prefix}/{key}"] = r[key]
    return out


def fmt(value: float | None) -> str:
    """A number in the paper's style (``2.29E-02``); empty for missing values."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2E}"
