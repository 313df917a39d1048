"""Table 1 with controls and robustness, beside the paper's layout.

Per job (stage ``stats``), on all re-trained confusions of each kind:

- **effects**: for every label of the re-training (each method, ``random_<method>``, ``drift``) the
  mean Δd with a 95% bootstrap interval over confusions, and the mean Δd net of drift (Δd minus the
  Δd of the unweighted re-training of the same confusion) with its interval.
- **comparisons**: ``a`` vs ``b`` for the main method against every other method (e.g. EIF against
  each IF variant) and every method against its random control and against drift: the mean of
  Δd_a - Δd_b, its 95% bootstrap interval, and the one-sided p-value of H1 mean Δd_a > mean Δd_b
  (paired t-test for pairs, Wilcoxon signed-rank for groups: the paper's tests).

Across a sweep's seeds (:func:`combine`): the per-seed rows plus one combined row per comparison:
Stouffer's method on the one-sided p-values (``scipy.stats.combine_pvalues``; each seed weighs the
same) and the mean of the per-seed effects with the range of their intervals.

Intervals: ``scipy.stats.bootstrap`` (percentile, 10,000 resamples, seeded) of the mean.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from eif.tables.format import fmt
from eif.tables.sweep import job_overrides
from eif.tables.table1 import TESTS, job_identity
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)

RESAMPLES = 10_000


def mean_ci(x: np.ndarray, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with a percentile bootstrap interval of the mean; nan bounds below 2 values."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 or not np.any(x != x[0]):
        m = float(x.mean()) if x.size else float("nan")
        return m, (m if x.size > 1 else float("nan")), (m if x.size > 1 else float("nan"))
    res = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=level,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def one_sided(kind: str, a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """(statistic, p) of H1 mean a > mean b: paired t-test (pairs) or Wilcoxon signed-rank (groups);
    (None, None) when the test is degenerate (no variation, or every difference zero)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = (
            stats.ttest_rel(a, b, alternative="greater")
            if kind == "pairs"
            else stats.wilcoxon(a - b, alternative="greater")
        )
    p, s = float(res.pvalue), float(res.statistic)
    if not math.isfinite(p) or (kind == "groups" and not np.any(a != b)):
        return None, None
    return (s if math.isfinite(s) else None), p


def job_rows(
    deltas: Mapping[str, np.ndarray], kind: str, main: str, methods: Sequence[str], seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(effect rows, comparison rows) of one kind (``pairs`` or ``groups``) from Δd per label."""
    drift = deltas.get("drift")
    effects = []
    for i, (label, d) in enumerate(deltas.items()):
        m, lo, hi = mean_ci(d, seed + i)
        row = {"kind": kind, "label": label, "n": len(d), "mean": m, "low": lo, "high": hi}
        if drift is not None and label != "drift":
            row["net_mean"], row["net_low"], row["net_high"] = mean_ci(d - drift, seed + 100 + i)
        effects.append(row)
    pairs = [(main, m) for m in methods if m != main]
    pairs += [(m, f"random_{m}") for m in methods] + [(m, "drift") for m in methods]
    comparisons = []
    for i, (a, b) in enumerate(pairs):
        if a not in deltas or b not in deltas or len(deltas[a]) < 2:
            continue
        diff = deltas[a] - deltas[b]
        m, lo, hi = mean_ci(diff, seed + 1000 + i)
        statistic, p = one_sided(kind, deltas[a], deltas[b])
        comparisons.append(
            {
                "kind": kind,
                "a": a,
                "b": b,
                "test": TESTS[kind],
                "n": len(diff),
                "mean": m,
                "low": lo,
                "high": hi,
                "statistic": statistic,
                "pvalue": p,
            }
        )
    return effects, comparisons


def _ci(row: Mapping[str, Any], prefix: str = "") -> str:
    m, lo, hi = row.get(f"{prefix}mean"), row.get(f"{prefix}low"), row.get(f"{prefix}high")
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    bounds = "" if lo is None or (isinstance(lo, float) and math.isnan(lo)) else f" [{fmt(lo)}, {fmt(hi)}]"
    return f"{fmt(m)}{bounds}"


def markdown(effects: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]]) -> str:
    """This job's robustness tables: effects per label and the comparisons, per kind."""
    parts = ["# Table 1, robustness: Δd with controls (95% bootstrap intervals over confusions)\n"]
    for kind in dict.fromkeys([r["kind"] for r in effects]):
        parts += [
            f"\n## {kind}: mean Δd per re-training\n",
            "| re-trained on | n | mean Δd | net of drift |",
            "|---|---:|---|---|",
        ]
        parts += [
            f"| {r['label']} | {r['n']} | {_ci(r)} | {_ci(r, 'net_')} |" for r in effects if r["kind"] == kind
        ]
        parts += [
            f"\n## {kind}: comparisons (H1: mean Δd of a > of b)\n",
            "| a | b | n | mean Δd_a − Δd_b | p-value | test |",
            "|---|---|---:|---|---:|---|",
        ]
        parts += [
            f"| {r['a']} | {r['b']} | {r['n']} | {_ci(r)} | {fmt(r['pvalue'])} | {r['test']} |"
            for r in comparisons
            if r["kind"] == kind
        ]
    return "\n".join(parts) + "\n"


MODEL = ["dataset", "model", "loss", "noise"]  # what one combined row pools over seeds of


def combine(per_job: pd.DataFrame) -> pd.DataFrame:
    """Across jobs (seeds) of one (dataset, model, loss, noise): one row per (kind, a, b) with the
    number of jobs, the mean of their mean differences, the lowest low and highest high of their
    intervals, and Stouffer's combined one-sided p-value (each job equal weight)."""
    rows = []
    keys = [*MODEL, "kind", "a", "b"]
    for key, g in per_job.groupby(keys, dropna=False, sort=False):
        ps = pd.to_numeric(g["pvalue"], errors="coerce").dropna().clip(1e-300, 1 - 1e-16)
        combined = float(stats.combine_pvalues(ps, method="stouffer").pvalue) if len(ps) else None
        rows.append(
            {
                **dict(zip(keys, key)),
                "jobs": len(g),
                "seeds": " ".join(str(s) for s in g["seed"]),
                "mean": float(pd.to_numeric(g["mean"]).mean()),
                "low": float(pd.to_numeric(g["low"]).min()),
                "high": float(pd.to_numeric(g["high"]).max()),
                "pvalue": combined,
            }
        )
    return pd.DataFrame(rows)


def collect(sweep_dir: Path) -> pd.DataFrame:
    """Every job's comparison rows (``stats.json`` in its run dir) with its dataset, model, loss, noise
    and seed."""
    frames = []
    for stats_file in sorted(Path(sweep_dir).glob("*/stats.json")):
        try:
            record = read_json(stats_file)
        except (OSError, ValueError) as err:
            log.warning("robustness: skipping unreadable %s (%s)", stats_file, err)
            continue
        ident = {**job_identity(job_overrides(stats_file.parent)), **record.get("job", {})}
        rows = record.get("robustness", {}).get("comparisons", [])
        frames.append(pd.DataFrame([{**{k: ident.get(k) for k in (*MODEL, "seed")}, **r} for r in rows]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sweep_markdown(per_job: pd.DataFrame, combined: pd.DataFrame) -> str:
    """Per (dataset, loss, kind): one line per comparison with each seed's mean difference and p-value,
    then the combined row."""
    parts = [
        "# Table 1, robustness across seeds (H1: mean Δd of a > of b)\n",
        "Per seed: mean Δd_a − Δd_b [95% bootstrap interval], one-sided p. Combined: the mean of the "
        "seeds' means, the widest of their intervals, Stouffer's p.\n",
    ]
    for (*ident, kind), g in combined.groupby([*MODEL, "kind"], sort=False, dropna=False):
        same = np.logical_and.reduce(
            [(per_job[k] == v) | (per_job[k].isna() & pd.isna(v)) for k, v in zip(MODEL, ident)]
        )
        seeds = sorted(per_job.loc[same, "seed"].dropna().unique())
        parts += [
            f"\n## {', '.join(str(v) for v in ident)}: {kind}\n",
            "| a | b | " + " | ".join(f"seed {int(s)}" for s in seeds) + " | combined | Stouffer p |",
            "|---|---|" + "---|" * len(seeds) + "---|---:|",
        ]
        for r in g.itertuples():
            sel = per_job[same & (per_job.kind == kind) & (per_job.a == r.a) & (per_job.b == r.b)]
            by = {row["seed"]: row for row in sel.to_dict("records")}
            cells = [f"{_ci(by[s])}, p {fmt(by[s]['pvalue'])}" if s in by else "" for s in seeds]
            parts.append(
                f"| {r.a} | {r.b} | " + " | ".join(cells) + f" | {_ci(r._asdict())} | {fmt(r.pvalue)} |"
            )
    return "\n".join(parts) + "\n"


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write table1_robustness{,_seeds}.csv and table1_robustness.md into ``sweep_dir``; returns the
    combined table (empty when no job has finished)."""
    sweep_dir = Path(sweep_dir)
    per_job = collect(sweep_dir)
    if per_job.empty:
        return per_job
    combined = combine(per_job)
    write_text(sweep_dir / "table1_robustness_seeds.csv", per_job.to_csv(index=False))
    write_text(sweep_dir / "table1_robustness.csv", combined.to_csv(index=False))
    write_text(sweep_dir / "table1_robustness.md", sweep_markdown(per_job, combined))
    return combined
