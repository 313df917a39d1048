"""Stage ``stats``: Table 1's tests of H1 "mean Δd_EIF > mean Δd_IF" on the re-training results.

Pairs: paired t-test over the first K pairs for K in ``stats.pair_sizes``; groups: Wilcoxon
signed-rank over the first M groups for M in ``stats.group_sizes`` (``eif.tables.table1``).

Artifacts: ``stats.json`` (``rows``: one per (kind, K or M) with improvement, statistic, p-value
and status; ``job``: dataset, loss, seed, noise of the run) and ``table1.md`` (this job's column of
Table 1). ``publish`` also copies ``stats.json`` into the run dir, where ``eif.tables.table1`` finds it,
writes this job's ``table1.{csv,md,tex}`` there (the sweep-level files have the same layout) and
prints the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import PositiveInt

from eif.settings import Settings
from eif.stages.base import Run, Stage
from eif.tables.format import fmt
from eif.tables.table1 import NOT_ENOUGH, compare, job_table, summary_keys, write_tables
from eif.utils.errors import require
from eif.utils.io import read_json, write_json, write_text

log = logging.getLogger(__name__)

KINDS = {"pair": ("pairs", "pair_sizes"), "group": ("groups", "group_sizes")}


class StatsConfig(Settings):
    """``stats``: Table 1's prefix sizes (t-test over the first K pairs, Wilcoxon over the first M groups)."""

    pair_sizes: tuple[PositiveInt, ...] = (30, 50, 70, 90, 100)
    group_sizes: tuple[PositiveInt, ...] = (10, 15, 20, 25, 30)


def _settings(job: Any, env: Any) -> StatsConfig:
    return job.stats


def _check(job: Any) -> None:
    methods = set(job.retrain.methods)
    require({"eif", "if"} <= methods, f"stats compares eif with if; retrain.methods is {sorted(methods)}")


def job_markdown(rows: list[dict[str, Any]]) -> str:
    """This job's Table 1 block: one line per K / M with average improvement and p-value."""
    lines = ["| test | n | average improvement | p-value | status |", "|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['test']} | {r['n']} | {fmt(r['improvement'])} | {fmt(r['pvalue'])} | "
            f"{r['status'] if r['status'] != 'ok' else ''} |"
        )
    return "\n".join(lines) + "\n"


def _compute(sc: StatsConfig, run: Run, out: Path) -> None:
    rows: list[dict[str, Any]] = []
    with np.load(run.input("retrain") / "distances.npz") as z:
        for kind, (name, sizes_key) in KINDS.items():
            if f"{kind}_delta_eif" not in z:
                continue
            rows += compare(name, z[f"{kind}_delta_eif"], z[f"{kind}_delta_if"], list(getattr(sc, sizes_key)))
    write_json(out / "stats.json", {"rows": rows, "job": run.job.as_dict()})
    write_text(out / "table1.md", job_markdown(rows))


def _publish(sc: StatsConfig, run: Run, out: Path) -> None:
    record = read_json(out / "stats.json")
    record["job"] = run.job.as_dict()
    write_json(run.run_dir / "stats.json", record)
    markdown = write_tables(job_table(record, run.run_dir.name), run.run_dir)
    print(markdown, flush=True)
    rows = record["rows"]
    for r in rows:
        log.info(
            "table1 %-6s n=%-3d improvement %-9s p %-9s %s",
            r["kind"],
            r["n"],
            fmt(r["improvement"]),
            fmt(r["pvalue"]),
            "" if r["status"] == "ok" else r["status"],
        )
    run.logger.summary(summary_keys(rows))
    short = sum(r["status"] == NOT_ENOUGH for r in rows)
    if short:
        log.warning("table1: %d of %d rows have not enough confusions", short, len(rows))
    run.logger.table("table1/stats", pd.DataFrame(rows))


STAGE = Stage(
    name="stats",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("retrain",),
    config=("stats", StatsConfig),
    check=_check,
)
