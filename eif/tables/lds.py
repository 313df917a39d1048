"""The attribution benchmark across a sweep's seeds (``sweeps/lds.yaml``): every job's ``lds.json``
(stage ``lds``) collected into ``lds_seeds.csv`` (one row per job, kind, method and horizon) and
summarised in ``lds_summary.csv`` and ``lds.md``: per kind, method and horizon the mean LDS over seeds
with its standard deviation and range; the noise ceiling likewise; and the removal check with the
mean Δd gain over random removal and Stouffer's combined one-sided p-value."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from scipy import stats

from eif.tables.sweep import SweepTablesCallback, config_identity
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)
IDENT = ("dataset", "loss", "seed")


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(LDS rows, ceiling rows, removal rows) of every finished job, each with the job's identity."""
    lds_rows, ceil_rows, removal_rows = [], [], []
    for path in sorted(Path(sweep_dir).glob("*/artifacts/lds/lds.json")):
        job = path.parents[2]
        try:
            ident, info = {**config_identity(job, IDENT), "job": job.name}, read_json(path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("lds: skipping unreadable job %s (%s)", job, err)
            continue
        lds_rows += [{**ident, **{k: v for k, v in r.items() if k != "per_seed"}} for r in info["rows"]]
        ceil_rows += [{**ident, **r} for r in info["ceilings"]]
        removal_rows += [{**ident, **r} for r in info["removal"]]
    return pd.DataFrame(lds_rows), pd.DataFrame(ceil_rows), pd.DataFrame(removal_rows)


def summarise(rows: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1), min, max and count of ``value`` over jobs, per ``by``."""
    g = rows.groupby(by, sort=False)[value]
    return g.agg(mean="mean", sd="std", low="min", high="max", jobs="count").reset_index()


def combine_removal(removal: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, loss, kind, k, removed): mean Δd, mean gain over random removal and Stouffer's
    combined one-sided p-value of "larger than random" (each job equal weight)."""
    rows = []
    keys = ["dataset", "loss", "kind", "k", "removed"]
    for key, g in removal.groupby(keys, sort=False):
        ps = pd.to_numeric(g.get("pvalue"), errors="coerce").dropna().clip(1e-300, 1 - 1e-16)
        gain = pd.to_numeric(g.get("vs_random"), errors="coerce")
        rows.append(
            {
                **dict(zip(keys, key)),
                "jobs": len(g),
                "mean_delta": float(g["mean_delta"].mean()),
                "vs_random": float(gain.mean()) if gain.notna().any() else None,
                "pvalue": float(stats.combine_pvalues(ps, method="stouffer").pvalue) if len(ps) else None,
            }
        )
    return pd.DataFrame(rows)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "" if v is None or v != v else f"{v:.{digits}f}"


def markdown(lds: pd.DataFrame, ceilings: pd.DataFrame, removal: pd.DataFrame) -> str:
    parts = [
        "# Attribution benchmark across seeds\n",
        "LDS: mean over seeds ± standard deviation [min, max]. Removal: mean Δd after dropping each "
        "confusion's k most harmful samples, its gain over dropping k random ones, Stouffer's p.\n",
    ]
    for (dataset, loss, kind), g in lds.groupby(["dataset", "loss", "kind"], sort=False):
        horizons = sorted(g.horizon.unique())
        parts += [
            f"\n## {dataset}, {loss}: LDS, {kind}s ({int(g.jobs.max())} seeds)\n",
            "| method | " + " | ".join(f"{h} epoch{'s' if h > 1 else ''}" for h in horizons) + " |",
            "|---|" + "---|" * len(horizons),
        ]
        for method, m in g.groupby("method", sort=False):
            by = {r.horizon: r for r in m.itertuples()}
            parts.append(f"| {method} | " + " | ".join(_cell(by.get(h)) for h in horizons) + " |")
        c = ceilings[(ceilings.dataset == dataset) & (ceilings.loss == loss) & (ceilings.kind == kind)]
        if len(c):
            by = {r.horizon: r for r in c.itertuples()}
            parts.append("| *noise ceiling* | " + " | ".join(_cell(by.get(h)) for h in horizons) + " |")
    if len(removal):
        parts += [
            "\n## Removal\n",
            "| data set | loss | kind | k | removed by | mean Δd | gain over random | Stouffer p |",
            "|---|---|---|---:|---|---:|---:|---:|",
        ]
        for r in removal.itertuples():
            p = "" if r.pvalue is None or r.pvalue != r.pvalue else f"{r.pvalue:.2e}"
            gain = "" if r.vs_random is None or r.vs_random != r.vs_random else f"{r.vs_random:.2e}"
            head = f"| {r.dataset} | {r.loss} | {r.kind} | {r.k} | {r.removed}"
            parts.append(f"{head} | {r.mean_delta:.2e} | {gain} | {p} |")
    return "\n".join(parts) + "\n"


def _cell(r: object | None) -> str:
    if r is None:
        return ""
    sd = "" if r.sd != r.sd else f" ± {r.sd:.3f}"
    return f"{r.mean:.3f}{sd} [{r.low:.3f}, {r.high:.3f}]"


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write lds_seeds.csv, lds_summary.csv, lds_removal.csv and lds.md into ``sweep_dir``; returns
    the per-job LDS rows."""
    sweep_dir = Path(sweep_dir)
    lds, ceilings, removal = collect(sweep_dir)
    if lds.empty:
        return lds
    keys = ["dataset", "loss", "kind"]
    summary = summarise(lds, "lds", [*keys, "method", "horizon"])
    ceil = summarise(ceilings, "ceiling", [*keys, "horizon"]) if len(ceilings) else ceilings
    rem = combine_removal(removal) if len(removal) else removal
    write_text(sweep_dir / "lds_seeds.csv", lds.to_csv(index=False))
    write_text(sweep_dir / "lds_summary.csv", summary.to_csv(index=False))
    write_text(sweep_dir / "lds_removal.csv", rem.to_csv(index=False))
    write_text(sweep_dir / "lds.md", markdown(summary, ceil, rem))
    log.info("lds: %d jobs -> %s", lds.job.nunique(), sweep_dir / "lds.md")
    return lds


class LdsCallback(SweepTablesCallback):
    """Hydra callback (``sweeps/lds.yaml``): the benchmark's tables after every job and at the end."""

    build = staticmethod(aggregate)
    name = "lds"
