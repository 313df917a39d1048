"""Table 1 with controls and robustness, beside the paper's layout.

Per job (stage ``stats``), on all re-trained confusions of each kind:

- **effects**: for every label of the re-training (each method, ``random_<method>``, ``drift``) the
  mean Δd with a 95% bootstrap interval over confusions, and the mean Δd net of drift (Δd minus the
  Δd of the unweighted re-training of the same confusion) with its interval.
- **comparisons**: ``a`` vs ``b`` for the main method against every other method (e.g. EIF against
  each IF variant) and every method against its random control and against drift: the mean of
  Δd_a - Δd_b, its 95% bootstrap interval, and the p-value of a paired t-test (pairs) or Wilcoxon
  signed-rank test (groups): one-sided (H1 mean Δd_a > mean Δd_b) only for the pre-registered
  comparison (``stats.method`` vs ``stats.baseline``, the paper's EIF vs IF), two-sided otherwise;
  and the main method against every other method net of each one's own random control
  (``net_<m>`` = Δd_m − Δd_random_m, :func:`with_net`). Each weighting scheme of the retrain stage
  beyond ``sign`` (labels ``<method>:<scheme>``) gets the same comparisons.
- **deltas**: every label's Δd per confusion, for the mixed model across seeds.

Across a sweep's seeds (:func:`combine`, statistics in :mod:`eif.tables.seedstats`): per comparison
the mean of the seed means with a bootstrap interval over seeds, a one-sample t-test and a Wilcoxon
signed-rank test of the seed means, and the headline mixed model (confusions nested in models);
Stouffer's combination of the per-seed p-values stays as a column labelled "conditional on these
models".

Intervals: ``scipy.stats.bootstrap`` (percentile, 10,000 resamples, seeded) of the mean.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eif.retrain.labels import DEFAULT_SCHEME, NET, RANDOM, scheme_label
from eif.tables.format import fmt
from eif.tables.seedstats import (
    TESTS,
    Alternative,
    across_seeds,
    mean_ci,
    one_sided,
    paired_test,
    stouffer,
)
from eif.tables.sweep import job_identity, job_overrides
from eif.utils.io import read_json, write_text

__all__ = [
    "aggregate",
    "combine",
    "collect",
    "job_rows",
    "markdown",
    "mean_ci",
    "one_sided",
    "sweep_markdown",
    "with_net",
]

log = logging.getLogger(__name__)

PREREGISTERED = "a > b (pre-registered)"
TWO_SIDED = "two-sided"


def with_net(deltas: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``deltas`` plus, for every label with a random control, ``net_<label>`` = Δd_label − Δd_random_label
    per confusion (appended after the others)."""
    out = dict(deltas)
    for label, d in deltas.items():
        if not label.startswith((RANDOM, NET)) and label != "drift" and f"{RANDOM}{label}" in deltas:
            out[f"{NET}{label}"] = np.asarray(d) - np.asarray(deltas[f"{RANDOM}{label}"])
    return out


def job_rows(
    deltas: Mapping[str, np.ndarray],
    kind: str,
    main: str,
    methods: Sequence[str],
    seed: int,
    baseline: str | None = None,
    schemes: Sequence[str] = ("sign",),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(effect rows, comparison rows) of one kind (``pairs`` or ``groups``) from Δd per label.

    Per weighting scheme: ``main`` against every other method, each method against its random control
    and drift, and (where :func:`with_net` added them) ``main`` against every other method net of each
    one's own random control. ``main`` vs ``baseline`` under ``sign`` is the pre-registered comparison
    (one-sided, H1 mean Δd_main > mean Δd_baseline); every other comparison is two-sided. The ``sign``
    scheme's rows come first, in their historical order (so their bootstrap seeds do not move)."""
    drift = deltas.get("drift")
    effects = []
    for i, (label, d) in enumerate(deltas.items()):
        if label.startswith(NET):
            continue  # the same numbers as the comparison of label with random_label
        m, lo, hi = mean_ci(d, seed + i)
        row: dict[str, Any] = {"kind": kind, "label": label, "n": len(d), "mean": m, "low": lo, "high": hi}
        if drift is not None and label != "drift":
            row["net_mean"], row["net_low"], row["net_high"] = mean_ci(d - drift, seed + 100 + i)
        effects.append(row)
    pairs: list[tuple[str, str]] = []
    for scheme in [DEFAULT_SCHEME, *(x for x in schemes if x != DEFAULT_SCHEME)]:
        ms = [scheme_label(m, scheme) for m in methods]
        top = scheme_label(main, scheme)
        block = [(top, m) for m in ms if m != top]
        block += [(m, f"random_{m}") for m in ms] + [(m, "drift") for m in ms]
        block += [(f"{NET}{top}", f"{NET}{m}") for m in ms if m != top]
        pairs += block
    comparisons = []
    for i, (a, b) in enumerate(pairs):
        if a not in deltas or b not in deltas or len(deltas[a]) < 2:
            continue
        diff = deltas[a] - deltas[b]
        m, lo, hi = mean_ci(diff, seed + 1000 + i)
        alternative: Alternative = "greater" if (a, b) == (main, baseline) else "two-sided"
        statistic, p = paired_test(kind, deltas[a], deltas[b], alternative)
        comparisons.append(
            {
                "kind": kind,
                "a": a,
                "b": b,
                "test": TESTS[kind],
                "alternative": alternative,
                "n": len(diff),
                "mean": m,
                "low": lo,
                "high": hi,
                "statistic": statistic,
                "pvalue": p,
            }
        )
    return effects, comparisons


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _ci(row: Mapping[str, Any], prefix: str = "") -> str:
    m, lo, hi = row.get(f"{prefix}mean"), row.get(f"{prefix}low"), row.get(f"{prefix}high")
    if _missing(m):
        return ""
    bounds = "" if _missing(lo) else f" [{fmt(lo)}, {fmt(hi)}]"
    return f"{fmt(m)}{bounds}"


def _h1(row: Mapping[str, Any]) -> str:
    return PREREGISTERED if row.get("alternative", "greater") == "greater" else TWO_SIDED


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
            f"\n## {kind}: comparisons (mean Δd of a vs of b; net_m = Δd_m − Δd_random_m)\n",
            "| a | b | n | mean Δd_a − Δd_b | p-value | H1 | test |",
            "|---|---|---:|---|---:|---|---|",
        ]
        parts += [
            f"| {r['a']} | {r['b']} | {r['n']} | {_ci(r)} | {fmt(r['pvalue'])} | {_h1(r)} | {r['test']} |"
            for r in comparisons
            if r["kind"] == kind
        ]
    return "\n".join(parts) + "\n"


MODEL = ("dataset", "model", "loss", "noise")  # what one combined row pools over seeds of
Deltas = dict[str, dict[str, np.ndarray]]  # kind -> label -> Δd per confusion, of one job


def _same(row: Mapping[str, Any], key: tuple[Any, ...], names: Sequence[str]) -> bool:
    """Whether ``row``'s values of ``names`` equal ``key`` (None and NaN equal each other)."""
    return all(
        (_missing(row.get(n)) and _missing(v)) or row.get(n) == v for n, v in zip(names, key, strict=True)
    )


def combine(per_job: Sequence[Mapping[str, Any]], deltas: Mapping[str, Deltas] | None = None) -> pd.DataFrame:
    """Across jobs (seeds) of one (dataset, model, loss, noise): one row per (kind, a, b) with the
    seed-level statistics of :func:`eif.tables.seedstats.across_seeds` (on each job's per-confusion
    differences from ``deltas``, by job name, where every job has them; otherwise on its mean) and
    Stouffer's p conditional on these models."""
    deltas = deltas or {}
    names = [*MODEL, "kind", "a", "b"]
    keys = list(dict.fromkeys(tuple(r.get(n) for n in names) for r in per_job))
    rows = []
    for i, key in enumerate(keys):
        group = [r for r in per_job if _same(r, key, names)]
        kind, a, b = str(key[-3]), str(key[-2]), str(key[-1])
        alternative: Alternative = (
            "greater" if all(r.get("alternative", "greater") == "greater" for r in group) else "two-sided"
        )
        per_confusion = [deltas.get(str(r.get("job")), {}).get(kind, {}) for r in group]
        if all(a in d and b in d for d in per_confusion):
            values = [d[a] - d[b] for d in per_confusion]
            # one-sided p of each seed for Stouffer, folded to two-sided below where H1 has no direction
            within = [one_sided(kind, d[a], d[b])[1] for d in per_confusion]
        else:  # stats.json of an older version: the seeds' means only
            values = [np.array([float(r["mean"])]) for r in group]
            within = [r.get("pvalue") for r in group] if alternative == "greater" else []
        combined = stouffer(within)
        if combined is not None and alternative == "two-sided":
            combined = min(1.0, 2 * min(combined, 1 - combined))
        rows.append(
            {
                **dict(zip(names, key, strict=True)),
                "jobs": len(group),
                "seeds": " ".join(str(r.get("seed")) for r in group),
                **across_seeds(values, alternative, seed=i),
                "stouffer_pvalue": combined,
            }
        )
    return pd.DataFrame(rows)


def collect(sweep_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Deltas]]:
    """(every job's comparison rows with its dataset, model, loss, noise, seed and job name; each job's
    Δd per kind, label and confusion, by job name) from the ``stats.json`` in each run dir."""
    rows: list[dict[str, Any]] = []
    deltas: dict[str, Deltas] = {}
    for stats_file in sorted(Path(sweep_dir).glob("*/stats.json")):
        try:
            record = read_json(stats_file)
        except (OSError, ValueError) as err:
            log.warning("robustness: skipping unreadable %s (%s)", stats_file, err)
            continue
        job = stats_file.parent.name
        ident = {**job_identity(job_overrides(stats_file.parent)), **record.get("job", {})}
        robust = record.get("robustness", {})
        rows += [
            {**{k: ident.get(k) for k in (*MODEL, "seed")}, **r, "job": job}
            for r in robust.get("comparisons", [])
        ]
        if "deltas" in robust:
            deltas[job] = {
                kind: {label: np.asarray(v, np.float64) for label, v in by_label.items()}
                for kind, by_label in robust["deltas"].items()
            }
    return rows, deltas


def sweep_markdown(per_job: Sequence[Mapping[str, Any]], combined: pd.DataFrame) -> str:
    """Per (dataset, loss, kind): one line per comparison with each seed's mean difference and p-value,
    then the seed-level statistics."""
    parts = [
        "# Table 1, robustness across seeds (Δd_a − Δd_b)\n",
        "Per seed: mean over confusions [95% bootstrap interval over confusions], that model's p "
        "(paired t-test for pairs, Wilcoxon for groups). Across seeds, the model (seed) is the unit: the "
        "mean of the seed means [95% bootstrap interval over seeds]; mixed model p (confusions nested in "
        "models, random intercept per seed; the headline test); one-sample t-test and Wilcoxon "
        "signed-rank p on the seed means; Stouffer's p on the per-seed p-values, which is conditional "
        "on these models (it treats them as fixed, so it overstates the evidence about methods). "
        f"p-values are two-sided except where H1 says {PREREGISTERED!r}.\n",
    ]
    records = combined.to_dict("records")
    names = [*MODEL, "kind"]
    for ident in dict.fromkeys(tuple(r[n] for n in names) for r in records):
        rows = [r for r in records if _same(r, ident, names)]
        mine = [r for r in per_job if _same(r, ident, names)]
        seeds = sorted({int(r["seed"]) for r in mine if not _missing(r.get("seed"))})
        shown = [str(v) for v in ident[:-1] if not _missing(v)]
        parts += [
            f"\n## {', '.join(shown)}: {ident[-1]}\n",
            "| a | b | H1 | "
            + " | ".join(f"seed {s}" for s in seeds)
            + " | across seeds | mixed model p | t-test p | Wilcoxon p"
            " | Stouffer p (conditional on these models) | note |",
            "|---|---|---|" + "---|" * len(seeds) + "---|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            by = {
                int(x["seed"]): x
                for x in mine
                if x["a"] == r["a"] and x["b"] == r["b"] and not _missing(x.get("seed"))
            }
            cells = [f"{_ci(by[s])}, p {fmt(by[s]['pvalue'])}" if s in by else "" for s in seeds]
            stats_cells = [
                fmt(_num(r.get(k))) for k in ("mixed_pvalue", "t_pvalue", "w_pvalue", "stouffer_pvalue")
            ]
            note = "" if r.get("status") == "ok" else str(r.get("status"))
            parts.append(
                f"| {r['a']} | {r['b']} | {_h1(r)} | "
                + " | ".join([*cells, _ci(r), *stats_cells, note])
                + " |"
            )
    return "\n".join(parts) + "\n"


def _num(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write table1_robustness{,_seeds}.csv and table1_robustness.md into ``sweep_dir``; returns the
    combined table (empty when no job has finished)."""
    sweep_dir = Path(sweep_dir)
    per_job, deltas = collect(sweep_dir)
    if not per_job:
        return pd.DataFrame()
    combined = combine(per_job, deltas)
    write_text(sweep_dir / "table1_robustness_seeds.csv", pd.DataFrame(per_job).to_csv(index=False))
    write_text(sweep_dir / "table1_robustness.csv", combined.to_csv(index=False))
    write_text(sweep_dir / "table1_robustness.md", sweep_markdown(per_job, combined))
    return combined
