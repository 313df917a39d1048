"""Cleaning across a sweep's seeds (``sweeps/clean_fmnist.yaml``): every job's ``clean.json`` (stage
``clean``) collected into ``clean_seeds.csv`` (one row per job and variant) and summarised in
``clean_summary.csv`` and ``clean.md``: per variant (noisy, oracle, each cleaner) the mean over seeds
and the standard deviation of labels changed, flips fixed, clean labels broken, Recall@K, MAP@R and
NMI, and each metric's gain over the noisy model of the same seed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from eif.tables.sweep import SweepTablesCallback, config_identity
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)
IDENT = ("dataset", "loss", "noise", "seed")
COUNTS = ("changed", "flips_fixed", "clean_broken")


def collect(sweep_dir: Path) -> pd.DataFrame:
    """One row per (finished job, variant) with the job's identity; metric gains over the job's noisy
    row as ``gain_<metric>``."""
    frames = []
    for path in sorted(Path(sweep_dir).glob("*/artifacts/clean/clean.json")):
        job = path.parents[2]
        try:
            ident, info = {**config_identity(job, IDENT), "job": job.name}, read_json(path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("clean: skipping unreadable job %s (%s)", job, err)
            continue
        rows = pd.DataFrame(info["rows"])
        noisy = rows[rows.variant == "noisy"].iloc[0]
        for m in metric_columns(rows):
            rows[f"gain_{m}"] = rows[m] - noisy[m]
        frames.append(rows.assign(**ident))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def metric_columns(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c.startswith("recall@") or c in ("map@r", "nmi")]


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over jobs per (dataset, loss, noise, variant)."""
    values = [*COUNTS, *metric_columns(rows), *(c for c in rows.columns if c.startswith("gain_"))]
    g = rows.groupby(["dataset", "loss", "noise", "variant"], sort=False)[values]
    out = g.mean().add_suffix("_mean").join(g.std().add_suffix("_sd")).join(g.size().rename("jobs"))
    return out.reset_index()


def markdown(summary: pd.DataFrame) -> str:
    parts = [
        "# Cleaning across seeds\n",
        "Mean over seeds ± standard deviation. Gains are against the noisy model of the same seed.\n",
    ]
    for (dataset, loss, noise), g in summary.groupby(["dataset", "loss", "noise"], sort=False):
        parts += [
            f"\n## {dataset}, {loss}, noise {noise} ({int(g.jobs.max())} seeds)\n",
            "| labels from | changed | flips fixed | clean broken | R@1 | gain R@1 | MAP@R | gain MAP@R |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in g.to_dict("records"):
            cells = [_pm(r, c, 1) for c in COUNTS]
            cells += [_pm(r, m, 4) for m in ("recall@1", "gain_recall@1", "map@r", "gain_map@r")]
            parts.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(parts) + "\n"


def _pm(r: dict, column: str, digits: int) -> str:
    mean, sd = r.get(f"{column}_mean"), r.get(f"{column}_sd")
    if mean is None or mean != mean:
        return ""
    return f"{mean:.{digits}f}" + ("" if sd is None or sd != sd else f" ± {sd:.{digits}f}")


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write clean_seeds.csv, clean_summary.csv and clean.md into ``sweep_dir``; returns the per-job rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if rows.empty:
        return rows
    summary = summarise(rows)
    write_text(sweep_dir / "clean_seeds.csv", rows.to_csv(index=False))
    write_text(sweep_dir / "clean_summary.csv", summary.to_csv(index=False))
    write_text(sweep_dir / "clean.md", markdown(summary))
    log.info("clean: %d jobs -> %s", rows.job.nunique(), sweep_dir / "clean.md")
    return rows


class CleanCallback(SweepTablesCallback):
    """Hydra callback (``sweeps/clean_fmnist.yaml``): the cleaning tables after every job and at the end."""

    build = staticmethod(aggregate)
    name = "clean"
