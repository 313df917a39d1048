"""Stage ``stats``: Table 1's tests of H1 "mean Δd_EIF > mean Δd_IF" on the re-training results.

Pairs: paired t-test over the first K pairs for K in ``stats.pair_sizes``; groups: Wilcoxon
signed-rank over the first M groups for M in ``stats.group_sizes`` (``eif.stats.table1``).

Artifacts: ``stats.json`` (``rows``: one per (kind, K or M) with improvement, statistic, p-value
and status; ``job``: dataset, loss, seed, noise of the run) and ``table1.md`` (this job's column of
Table 1). ``publish`` also copies ``stats.json`` into the run dir, where ``eif.aggregate`` finds it,
writes this job's ``table1.{csv,md,tex}`` there (the sweep-level files have the same layout) and
prints the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from eif.aggregate import job_table, write_tables
from eif.stages.base import Context, Stage, plain
from eif.stats.table1 import NOT_ENOUGH, compare, fmt, summary_keys
from eif.utils.errors import require
from eif.utils.io import read_json, write_json, write_text

log = logging.getLogger(__name__)

KINDS = {"pair": ("pairs", "pair_sizes"), "group": ("groups", "group_sizes")}


def _fields(cfg: DictConfig) -> dict[str, Any]:
    return {"stats": plain(cfg.stats)}


def job_info(cfg: DictConfig) -> dict[str, Any]:
    """The identity of a job in a sweep: dataset, loss, seed and noise level."""
    return {
        "dataset": str(cfg.dataset.name),
        "loss": str(cfg.loss.name),
        "seed": int(cfg.seed),
        "noise": str(cfg.noise.name),
    }


def job_markdown(rows: list[dict[str, Any]]) -> str:
    """This job's Table 1 block: one line per K / M with average improvement and p-value."""
    lines = ["| test | n | average improvement | p-value | status |", "|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['test']} | {r['n']} | {fmt(r['improvement'])} | {fmt(r['pvalue'])} | "
            f"{r['status'] if r['status'] != 'ok' else ''} |"
        )
    return "\n".join(lines) + "\n"


def _compute(ctx: Context, out: Path) -> None:
    sc = ctx.cfg.stats
    methods = [str(m) for m in ctx.cfg.retrain.methods]
    require({"eif", "if"} <= set(methods), f"stats compares eif with if; retrain.methods is {methods}")
    rows: list[dict[str, Any]] = []
    with np.load(ctx.require("retrain") / "distances.npz") as z:
        for kind, (name, sizes_key) in KINDS.items():
            if f"{kind}_delta_eif" not in z:
                continue
            rows += compare(name, z[f"{kind}_delta_eif"], z[f"{kind}_delta_if"], list(sc[sizes_key]))
    write_json(out / "stats.json", {"rows": rows, "job": job_info(ctx.cfg)})
    write_text(out / "table1.md", job_markdown(rows))


def _publish(ctx: Context, out: Path) -> None:
    record = read_json(out / "stats.json")
    record["job"] = job_info(ctx.cfg)
    write_json(ctx.run_dir / "stats.json", record)
    markdown = write_tables(job_table(record, ctx.run_dir.name), ctx.run_dir)
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
    ctx.logger.summary(summary_keys(rows))
    short = sum(r["status"] == NOT_ENOUGH for r in rows)
    if short:
        log.warning("table1: %d of %d rows have not enough confusions", short, len(rows))
    ctx.logger.table("table1/stats", pd.DataFrame(rows))


STAGE = Stage(name="stats", deps=("retrain",), fields=_fields, compute=_compute, publish=_publish)
