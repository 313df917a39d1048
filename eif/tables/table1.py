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

Each job's ``stats`` stage writes ``stats.json`` into its run dir; :func:`aggregate` collects a sweep's
jobs into ``table1.csv`` (long), ``table1.md`` and ``table1.tex`` (the paper's layout: per loss, one
column pair per data set and seed). Jobs that failed or have not run are empty cells.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from eif.retrain.labels import DEFAULT_SCHEME
from eif.tables import robustness
from eif.tables.format import fmt
from eif.tables.seedstats import TESTS, paired_test
from eif.tables.sweep import SweepTablesCallback, expected_jobs, job_identity, job_overrides, log_to_wandb
from eif.utils.errors import require
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)

OK = "ok"
NOT_ENOUGH = "not enough confusions"
DEGENERATE = "degenerate (no variation in the differences)"


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
            statistic, p = paired_test(kind, a, b, "greater")  # H1 is pre-registered: one-sided
            row.update(
                improvement=float(np.mean(a - b)),
                status=OK if p is not None else DEGENERATE,
                pvalue=p,
                statistic=statistic,
            )
        rows.append(row)
    return rows


def summary_keys(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Flat run-summary values, e.g. ``table1/pairs/K=30/improvement`` and ``.../pvalue`` (the ``sign``
    weighting; another scheme's rows ``table1/<scheme>/pairs/...``)."""
    out: dict[str, float] = {}
    for r in rows:
        scheme = r.get("weighting", DEFAULT_SCHEME)
        top = "table1" if scheme == DEFAULT_SCHEME else f"table1/{scheme}"
        prefix = f"{top}/{r['kind']}/{'K' if r['kind'] == 'pairs' else 'M'}={r['n']}"
        for key in ("improvement", "pvalue"):
            if r[key] is not None:
                out[f"{prefix}/{key}"] = r[key]
    return out


# ---------------------------------------------------------------- the paper's layout, across jobs

DATASET_ORDER = ["cub", "cars", "inshop"]
DATASET_TITLES = {"cub": "CUB200", "cars": "CARS196", "inshop": "InShop", "fashion_mnist": "Fashion-MNIST"}
KIND_TITLES = {
    "pairs": ("Individual confusion", "# confusion pairs"),
    "groups": ("Group confusion", "# confusion groups"),
}
COLUMNS = [
    "dataset",
    "loss",
    "seed",
    "noise",
    "weighting",
    "kind",
    "test",
    "n",
    "improvement",
    "pvalue",
    "statistic",
    "status",
    "job",
]


def collect(sweep_dir: Path, sizes: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """Long table: one row per (job, kind, n); jobs without ``stats.json`` get status ``missing``."""
    sweep_dir = Path(sweep_dir)
    rows: list[pd.DataFrame] = []
    seen: list[dict[str, str]] = []
    for stats_file in sorted(sweep_dir.glob("*/stats.json")):
        try:
            record = read_json(stats_file)
        except (OSError, ValueError) as err:
            log.warning("aggregate: skipping unreadable %s (%s)", stats_file, err)
            continue
        seen.append(job_overrides(stats_file.parent))
        rows.append(job_table(record, stats_file.parent.name))
    found = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    if sizes is None:
        sizes = _sweep_sizes(sweep_dir)
    for kind in KIND_TITLES:
        sizes.setdefault(kind, [])
        sizes[kind] = sorted(set(sizes[kind]) | set(found.loc[found.kind == kind, "n"].astype(int)))
    job_dirs = (
        [
            (d.name, job_overrides(d))
            for d in sorted(sweep_dir.iterdir())
            if d.is_dir() and (d / ".hydra").is_dir()
        ]
        if sweep_dir.is_dir()
        else []
    )
    missing = []
    for ov in expected_jobs(sweep_dir):
        if any(ov.items() <= o.items() for o in seen):
            continue
        started = [name for name, o in job_dirs if ov.items() <= o.items()]
        ident = {**job_identity(ov), "status": "missing", "job": started[0] if started else ""}
        ident["weighting"] = DEFAULT_SCHEME
        missing += [{**ident, "kind": kind, "n": n} for kind, ns in sizes.items() for n in ns]
    table = pd.concat([found, pd.DataFrame(missing, columns=COLUMNS)], ignore_index=True)
    return table.astype({"n": int})


def _weightings(table: pd.DataFrame) -> list[str]:
    """The weighting schemes in ``table``, ``sign`` (the paper's column) first."""
    found = [str(w) for w in dict.fromkeys(table["weighting"]) if w != DEFAULT_SCHEME]
    return [DEFAULT_SCHEME, *found]


def _sweep_sizes(sweep_dir: Path) -> dict[str, list[int]]:
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return {}
    cfg = OmegaConf.load(path)
    out = {}
    for kind, key in (("pairs", "stats.pair_sizes"), ("groups", "stats.group_sizes")):
        try:
            value = OmegaConf.select(cfg, key)
        except Exception:  # noqa: BLE001 - an interpolation that only resolves inside a job
            value = None
        if value is not None:
            out[kind] = [int(v) for v in value]
    return out


def _columns(table: pd.DataFrame) -> list[tuple[str, str, Any]]:
    """(loss, dataset, seed) column blocks, datasets in the paper's order."""
    keys = table[["loss", "dataset", "seed"]].drop_duplicates().itertuples(index=False, name=None)
    order = {d: i for i, d in enumerate(DATASET_ORDER)}
    return sorted(
        keys,
        key=lambda k: (
            str(k[0]),
            order.get(k[1], len(order)),
            str(k[1]),
            -1 if k[2] is None or pd.isna(k[2]) else int(k[2]),
        ),
    )


def wide(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per loss, the paper's layout: rows (kind, n), two columns (improvement, p-value) per model and
    weighting scheme (``sign``, the paper's, then each other scheme beside it)."""
    out = {}
    cols = _columns(table)
    for loss in dict.fromkeys(c[0] for c in cols):
        blocks = [c for c in cols if c[0] == loss]
        pairs = table.loc[table.loss == loss, ["kind", "n"]].drop_duplicates()
        pairs = pairs.itertuples(index=False, name=None)
        index = sorted(pairs, key=lambda kn: (list(KIND_TITLES).index(kn[0]), int(kn[1])))
        data: dict[tuple[str, str], list[str]] = {}
        for _, dataset, seed in blocks:
            seed_txt = "?" if pd.isna(seed) else int(seed)
            model = f"{DATASET_TITLES.get(str(dataset), dataset)} (seed {seed_txt})"
            sel = table[
                (table.loss == loss)
                & (table.dataset == dataset)
                & ((table.seed == seed) if not pd.isna(seed) else table.seed.isna())
            ]
            for scheme in _weightings(table):
                mine = pd.DataFrame(sel[sel.weighting == scheme]).to_dict("records")
                if scheme != DEFAULT_SCHEME and not mine:
                    continue
                title = model if scheme == DEFAULT_SCHEME else f"{model}, {scheme}-weighted"
                by = {(str(r["kind"]), int(r["n"])): r for r in mine}
                data[(title, "average improvement")] = [_cell(by.get(i), "improvement") for i in index]
                data[(title, "p-value")] = [_cell(by.get(i), "pvalue") for i in index]
        frame = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=["kind", "n"]))
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
        out[str(loss)] = frame
    return out


def _cell(row: Mapping[Hashable, Any] | None, key: str) -> str:
    if row is None or row["status"] == "missing":
        return ""
    value = row[key]
    if value is None or pd.isna(value):
        return "n/a" if row["status"] == NOT_ENOUGH else "-"
    return fmt(float(value))


def to_markdown(tables: dict[str, pd.DataFrame]) -> str:
    parts = [
        "# Table 1: EIF vs IF, Δd after re-training on each method's samples\n",
        "Empty cells: the job is missing or failed. n/a: not enough confusions for this K or M. "
        "-: degenerate test.\n",
    ]
    for loss, frame in tables.items():
        models = list(dict.fromkeys(c[0] for c in frame.columns))
        for kind in ("pairs", "groups"):
            if kind not in frame.index.get_level_values(0):
                continue
            title, first = KIND_TITLES[kind]
            parts.append(f"\n## {title} ({loss})\n")
            head = [first] + [f"{m}: {s}" for m in models for s in ("average improvement", "p-value")]
            parts.append("| " + " | ".join(head) + " |")
            parts.append("|" + "---:|" * len(head))
            for n, row in frame.loc[kind].iterrows():
                parts.append("| " + " | ".join([str(n)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(parts) + "\n"


def to_latex(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    for loss, frame in tables.items():
        parts.append(f"% Table 1 ({loss}); rows: kind (pairs: paired t-test, groups: Wilcoxon), K or M\n")
        parts.append(frame.to_latex(multicolumn=True, multicolumn_format="c", escape=True))
    return "\n".join(parts)


def write_tables(table: pd.DataFrame, out_dir: Path) -> str:
    """Write a long table as table1.{csv,md,tex} into ``out_dir``; returns the markdown."""
    write_text(out_dir / "table1.csv", table.to_csv(index=False))
    tables = wide(table) if len(table) else {}
    markdown = to_markdown(tables)
    write_text(out_dir / "table1.md", markdown)
    write_text(out_dir / "table1.tex", to_latex(tables))
    return markdown


def job_table(record: dict[str, Any], job: str) -> pd.DataFrame:
    """The long table of one job's ``stats.json`` record (the rows ``collect`` reads per job)."""
    return pd.DataFrame(
        [
            {**record.get("job", {}), "weighting": DEFAULT_SCHEME, **r, "job": job}
            for r in record.get("rows", [])
        ],
        columns=COLUMNS,
    )


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write table1.{csv,md,tex} and the robustness tables across seeds (table1_robustness.{csv,md},
    :func:`eif.tables.robustness.aggregate`) into ``sweep_dir``; returns the long table."""
    sweep_dir = Path(sweep_dir)
    table = collect(sweep_dir)
    write_tables(table, sweep_dir)
    robustness.aggregate(sweep_dir)
    jobs = table.drop_duplicates(["dataset", "loss", "seed"])
    log.info(
        "aggregate: %d jobs (%d missing) -> %s",
        len(jobs),
        int((jobs.status == "missing").sum()),
        sweep_dir / "table1.md",
    )
    return table


class Table1Callback(SweepTablesCallback):
    """Hydra callback (``sweeps/table1_common.yaml``): Table 1 and its robustness tables after every job
    and when the sweep ends; both go to W&B at the end."""

    build = staticmethod(aggregate)
    name = "table1"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        super().on_multirun_end(config, **kwargs)
        path = Path(config.hydra.sweep.dir) / "table1_robustness.csv"
        if path.is_file():
            try:
                log_to_wandb(config, path.parent, pd.read_csv(path), "table1_robustness")
            except Exception as err:  # noqa: BLE001 - the files are written; W&B is extra
                log.warning("logging the table1_robustness table to W&B failed: %s", err)
