"""Cleaning across a sweep's seeds (``sweeps/clean_fmnist.yaml``): every job's ``clean.json`` (stage
``clean``) collected into ``clean_seeds.csv`` (one row per job and variant) and summarised in
``clean_summary.csv`` and ``clean.md``: per variant (noisy, oracle, each cleaner) the mean over seeds
and the standard deviation of labels changed, flips fixed, clean labels broken, Recall@K, MAP@R and
NMI, and each metric's gain over the noisy model of the same seed. ``clean_gains.csv`` tests each
variant's gains at seed level (the trained model is the unit; :mod:`eif.tables.seedstats`): the mean
gain over seeds with a bootstrap interval over seeds and two-sided one-sample t-test and Wilcoxon
signed-rank p-values (one value per model, so no mixed model)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eif.tables.seedstats import across_seeds
from eif.tables.sweep import SweepTablesCallback, config_identity
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)
IDENT = ("dataset", "loss", "noise", "seed")
MODEL = ("dataset", "loss", "noise")  # what the seeds replicate
COUNTS = ("changed", "flips_fixed", "clean_broken")
SHOWN_GAINS = ("gain_recall@1", "gain_map@r")  # the gains clean.md tests; the csv has all of them
Row = dict[str, Any]


def collect(sweep_dir: Path) -> list[Row]:
    """One row per (finished job, variant) with the job's identity; metric gains over the job's noisy
    row as ``gain_<metric>``."""
    out: list[Row] = []
    for path in sorted(Path(sweep_dir).glob("*/artifacts/clean/clean.json")):
        job = path.parents[2]
        try:
            ident, info = {**config_identity(job, IDENT), "job": job.name}, read_json(path)
            rows: list[Row] = list(info["rows"])
            noisy = next(r for r in rows if r["variant"] == "noisy")
        except (OSError, ValueError, KeyError, StopIteration) as err:
            log.warning("clean: skipping unreadable job %s (%s)", job, err)
            continue
        for r in rows:
            gains = {f"gain_{m}": float(r[m]) - float(noisy[m]) for m in metric_columns(r)}
            out.append({**r, **gains, **ident})
    return out


def metric_columns(row: Mapping[str, Any]) -> list[str]:
    return [c for c in row if c.startswith("recall@") or c in ("map@r", "nmi")]


def _groups(rows: Sequence[Row], names: Sequence[str]) -> dict[tuple[Any, ...], list[Row]]:
    out: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        out.setdefault(tuple(r[n] for n in names), []).append(r)
    return out


def _values(rows: Sequence[Row]) -> list[str]:
    first = rows[0]
    return [*COUNTS, *metric_columns(first), *(c for c in first if c.startswith("gain_"))]


def summarise(rows: Sequence[Row]) -> list[Row]:
    """Mean and standard deviation (ddof 1) over jobs per (dataset, loss, noise, variant)."""
    out = []
    names = [*MODEL, "variant"]
    for key, g in _groups(rows, names).items():
        row: Row = dict(zip(names, key, strict=True))
        for c in _values(g):
            x = np.array([float(r[c]) for r in g if c in r])
            row[f"{c}_mean"] = float(x.mean()) if x.size else math.nan
            row[f"{c}_sd"] = float(x.std(ddof=1)) if x.size > 1 else math.nan
        row["jobs"] = len(g)
        out.append(row)
    return out


def gain_tests(rows: Sequence[Row]) -> list[Row]:
    """Per (dataset, loss, noise, variant other than noisy, metric): the seed-level statistics of the
    gain over the noisy model (two-sided)."""
    out = []
    names = [*MODEL, "variant"]
    for key, g in _groups([r for r in rows if r["variant"] != "noisy"], names).items():
        for gain in (c for c in g[0] if c.startswith("gain_")):
            values = [[float(r[gain])] for r in g if gain in r]
            stats = across_seeds(values, "two-sided", seed=len(out))
            out.append({**dict(zip(names, key, strict=True)), "metric": gain[len("gain_") :], **stats})
    return out


def markdown(summary: Sequence[Row], gains: Sequence[Row]) -> str:
    parts = [
        "# Cleaning across seeds\n",
        "Mean over seeds ± standard deviation. Gains are against the noisy model of the same seed; "
        "tested at seed level (the trained model is the unit): the mean gain [95% bootstrap interval "
        "over seeds], two-sided one-sample t-test and Wilcoxon signed-rank p.\n",
    ]
    for key, g in _groups(summary, MODEL).items():
        dataset, loss, noise = key
        parts += [
            f"\n## {dataset}, {loss}, noise {noise} ({max(int(r['jobs']) for r in g)} seeds)\n",
            "| labels from | changed | flips fixed | clean broken | R@1 | gain R@1 | MAP@R | gain MAP@R |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in g:
            cells = [_pm(r, c, 1) for c in COUNTS]
            cells += [_pm(r, m, 4) for m in ("recall@1", "gain_recall@1", "map@r", "gain_map@r")]
            parts.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
        tested = [
            r for r in gains if tuple(r[n] for n in MODEL) == key and f"gain_{r['metric']}" in SHOWN_GAINS
        ]
        if tested:
            parts += [
                "\n| labels from | gain in | mean gain [95% bootstrap over seeds] | t-test p | Wilcoxon p "
                "| note |",
                "|---|---|---|---:|---:|---|",
            ]
            parts += [
                f"| {r['variant']} | {r['metric']} | {_interval(r)} | {_e(r['t_pvalue'])} | "
                f"{_e(r['w_pvalue'])} | {_note(r)} |"
                for r in tested
            ]
    return "\n".join(parts) + "\n"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _pm(r: Mapping[str, Any], column: str, digits: int) -> str:
    mean, sd = r.get(f"{column}_mean"), r.get(f"{column}_sd")
    if _missing(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if _missing(sd) else f" ± {sd:.{digits}f}")


def _e(v: Any) -> str:
    return "" if _missing(v) else f"{v:.2e}"


def _interval(r: Mapping[str, Any]) -> str:
    bounds = "" if _missing(r["low"]) else f" [{r['low']:.4f}, {r['high']:.4f}]"
    return f"{r['mean']:.4f}{bounds}"


def _note(r: Mapping[str, Any]) -> str:
    return "" if r["status"] == "ok" else str(r["status"])


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write clean_seeds.csv, clean_summary.csv, clean_gains.csv and clean.md into ``sweep_dir``;
    returns the per-job rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        return pd.DataFrame()
    summary, gains = summarise(rows), gain_tests(rows)
    write_text(sweep_dir / "clean_seeds.csv", pd.DataFrame(rows).to_csv(index=False))
    write_text(sweep_dir / "clean_summary.csv", pd.DataFrame(summary).to_csv(index=False))
    write_text(sweep_dir / "clean_gains.csv", pd.DataFrame(gains).to_csv(index=False))
    write_text(sweep_dir / "clean.md", markdown(summary, gains))
    log.info("clean: %d jobs -> %s", len({r["job"] for r in rows}), sweep_dir / "clean.md")
    return pd.DataFrame(rows)


class CleanCallback(SweepTablesCallback):
    """Hydra callback (``sweeps/clean_fmnist.yaml``): the cleaning tables after every job and at the end."""

    build = staticmethod(aggregate)
    name = "clean"
