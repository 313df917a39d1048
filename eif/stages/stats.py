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

from eif.retrain.labels import DEFAULT_SCHEME, scheme_label
from eif.settings import Settings
from eif.stages.base import Run, Stage
from eif.tables import robustness
from eif.tables.format import fmt
from eif.tables.table1 import NOT_ENOUGH, compare, job_table, summary_keys, write_tables
from eif.utils.errors import require
from eif.utils.io import read_json, write_json, write_text

log = logging.getLogger(__name__)

KINDS = {"pair": ("pairs", "pair_sizes"), "group": ("groups", "group_sizes")}


class StatsConfig(Settings):
    """``stats``: Table 1 compares ``method`` with ``baseline`` (the paper: EIF against IF) by a t-test
    over the first K pairs and a Wilcoxon test over the first M groups; the robustness table compares
    ``method`` with every other re-trained method and each method with its controls."""

    method: str = "eif"
    baseline: str = "if"
    pair_sizes: tuple[PositiveInt, ...] = (30, 50, 70, 90, 100)
    group_sizes: tuple[PositiveInt, ...] = (10, 15, 20, 25, 30)


class StatsSettings(Settings):
    stats: StatsConfig
    seed: int


def _settings(job: Any, env: Any) -> StatsSettings:
    return StatsSettings(stats=job.stats, seed=job.seed)


def _check(job: Any) -> None:
    retrained = set(job.retrain.methods or job.methods)
    for which in ("method", "baseline"):
        name = getattr(job.stats, which)
        require(
            name in retrained, f"stats.{which}={name} is not among the re-trained methods {sorted(retrained)}"
        )


def job_markdown(rows: list[dict[str, Any]]) -> str:
    """This job's Table 1 block: one line per K / M with average improvement and p-value."""
    lines = [
        "| weighting | test | n | average improvement | p-value | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('weighting', DEFAULT_SCHEME)} | {r['test']} | {r['n']} | {fmt(r['improvement'])} | "
            f"{fmt(r['pvalue'])} | "
            f"{r['status'] if r['status'] != 'ok' else ''} |"
        )
    return "\n".join(lines) + "\n"


def _compute(s: StatsSettings, run: Run, out: Path) -> None:
    sc = s.stats
    rows: list[dict[str, Any]] = []
    effects: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    deltas: dict[str, dict[str, list[float]]] = {}  # kind -> label -> Δd per confusion (mixed model)
    info = read_json(run.input("retrain") / "retrain.json")
    methods, schemes = info["methods"], info.get("schemes", [DEFAULT_SCHEME])
    with np.load(run.input("retrain") / "distances.npz") as z:
        for kind, (name, sizes_key) in KINDS.items():
            if f"{kind}_delta_{sc.method}" not in z:
                continue
            for scheme in schemes:  # Table 1 per weighting scheme: the sign column, then the others
                main = z[f"{kind}_delta_{scheme_label(sc.method, scheme)}"]
                base = z[f"{kind}_delta_{scheme_label(sc.baseline, scheme)}"]
                sizes = list(getattr(sc, sizes_key))
                rows += [{**r, "weighting": scheme} for r in compare(name, main, base, sizes)]
            prefix = f"{kind}_delta_"
            by_label = robustness.with_net({k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)})
            e, c = robustness.job_rows(
                by_label, name, sc.method, methods, s.seed, baseline=sc.baseline, schemes=schemes
            )
            effects += e
            comparisons += c
            deltas[name] = {label: d.tolist() for label, d in by_label.items()}
    record = {
        "rows": rows,
        "robustness": {"effects": effects, "comparisons": comparisons, "deltas": deltas},
        "compared": [sc.method, sc.baseline],
        "job": run.job.as_dict(),
    }
    write_json(out / "stats.json", record)
    write_text(out / "table1.md", job_markdown(rows))
    write_text(out / "robustness.md", robustness.markdown(effects, comparisons))


def _publish(s: StatsSettings, run: Run, out: Path) -> None:
    record = read_json(out / "stats.json")
    record["job"] = run.job.as_dict()
    write_json(run.run_dir / "stats.json", record)
    markdown = write_tables(job_table(record, run.run_dir.name), run.run_dir)
    robust = robustness.markdown(record["robustness"]["effects"], record["robustness"]["comparisons"])
    write_text(run.run_dir / "table1_robustness.md", robust)
    print(markdown + "\n" + robust, flush=True)
    rows = record["rows"]
    for r in rows:
        log.info(
            "table1 %-9s %-6s n=%-3d improvement %-9s p %-9s %s",
            r.get("weighting", DEFAULT_SCHEME),
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
    run.logger.table("table1/robustness_effects", pd.DataFrame(record["robustness"]["effects"]))
    run.logger.table("table1/robustness_comparisons", pd.DataFrame(record["robustness"]["comparisons"]))
    for r in record["robustness"]["comparisons"]:
        key = f"table1_robust/{r['kind']}/{r['a']}-vs-{r['b']}"
        run.logger.summary(
            {f"{key}/mean": r["mean"], **({f"{key}/pvalue": r["pvalue"]} if r["pvalue"] is not None else {})}
        )


STAGE = Stage(
    name="stats",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("retrain",),
    config=("stats", StatsConfig),
    check=_check,
    # 3: two-sided robustness p-values except stats.method vs stats.baseline; Δd per confusion.
    # 4: Table 1 rows per weighting scheme; comparisons net of each method's random control (net_<m>)
    version=4,
)
