"""Collect a sweep's Table 1 jobs into ``table1.csv``, ``table1.md`` and ``table1.tex`` in the sweep dir.

    python -m eif.aggregate <sweep_dir>

Every job of a sweep writes ``<sweep_dir>/<job>/stats.json`` (stage ``stats``). The expected jobs
are the sweep's parameter grid, read from ``<sweep_dir>/multirun.yaml`` (written by Hydra when the
sweep starts), plus every job directory present. A job that failed, was killed or has not run yet
appears with empty cells; aggregation never fails because of it.

:class:`Table1Callback` (registered in ``sweeps/table1.yaml``) runs the aggregation after every
job (best effort, so a sweep that dies half-way still leaves a table) and once more when the sweep
ends, then logs the table to W&B as a short run of its own when the sweep's logger is wandb.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from eif.stats.table1 import fmt
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)

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
    "kind",
    "test",
    "n",
    "improvement",
    "pvalue",
    "statistic",
    "status",
    "job",
]
MODEL_KEY = "table1_model"  # sweep option named <dataset>-<loss>-<seed> (sweeps/table1_model/)


def _identity(overrides: dict[str, str]) -> dict[str, Any]:
    """(dataset, loss, seed) of a job from its sweep overrides, as far as they say."""
    ident: dict[str, Any] = {k: overrides.get(k) for k in ("dataset", "loss", "seed")}
    if MODEL_KEY in overrides:
        ident["dataset"], ident["loss"], ident["seed"] = overrides[MODEL_KEY].split("-")
    if ident["seed"] is not None:
        ident["seed"] = int(ident["seed"])
    return ident


def expected_jobs(sweep_dir: Path) -> list[dict[str, str]]:
    """The sweep overrides of every job the sweep launches: the product of its swept parameters.

    Parameters come from ``hydra.sweeper.params`` and from sweep overrides on the command line
    (``a=x,y``); fixed overrides are the same for every job and left out.
    """
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(path)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    strings = [f"{k}={v}" for k, v in params.items()]
    strings += list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
    axes = [
        [(ov.key_or_group.lstrip("+~"), v) for v in ov.sweep_string_iterator()]
        for ov in OverridesParser.create().parse_overrides(strings)
        if ov.is_sweep_override()
    ]
    return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def _job_overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for s in OmegaConf.to_container(OmegaConf.load(path)) or []:
        key, _, value = str(s).partition("=")
        out[key.lstrip("+~")] = value
    return out


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
        seen.append(_job_overrides(stats_file.parent))
        rows.append(job_table(record, stats_file.parent.name))
    found = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    if sizes is None:
        sizes = _sweep_sizes(sweep_dir)
    for kind in KIND_TITLES:
        sizes.setdefault(kind, [])
        sizes[kind] = sorted(set(sizes[kind]) | set(found.loc[found.kind == kind, "n"].astype(int)))
    job_dirs = (
        [
            (d.name, _job_overrides(d))
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
        ident = {**_identity(ov), "status": "missing", "job": started[0] if started else ""}
        missing += [{**ident, "kind": kind, "n": n} for kind, ns in sizes.items() for n in ns]
    table = pd.concat([found, pd.DataFrame(missing, columns=COLUMNS)], ignore_index=True)
    return table.astype({"n": int})


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
    """Per loss, the paper's layout: rows (kind, n), two columns (improvement, p-value) per model."""
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
            title = f"{DATASET_TITLES.get(str(dataset), dataset)} (seed {seed_txt})"
            sel = table[
                (table.loss == loss)
                & (table.dataset == dataset)
                & ((table.seed == seed) if not pd.isna(seed) else table.seed.isna())
            ]
            by = {(r.kind, int(r.n)): r for r in sel.itertuples()}
            data[(title, "average improvement")] = [_cell(by.get(i), "improvement") for i in index]
            data[(title, "p-value")] = [_cell(by.get(i), "pvalue") for i in index]
        frame = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=["kind", "n"]))
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
        out[str(loss)] = frame
    return out


def _cell(row: Any, key: str) -> str:
    if row is None or row.status == "missing":
        return ""
    value = getattr(row, key)
    if value is None or pd.isna(value):
        return "n/a" if row.status == "not enough confusions" else "-"
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
        [{**record.get("job", {}), **r, "job": job} for r in record.get("rows", [])], columns=COLUMNS
    )


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write table1.{csv,md,tex} into ``sweep_dir``; returns the long table."""
    sweep_dir = Path(sweep_dir)
    table = collect(sweep_dir)
    write_tables(table, sweep_dir)
    jobs = table.drop_duplicates(["dataset", "loss", "seed"])
    log.info(
        "aggregate: %d jobs (%d missing) -> %s",
        len(jobs),
        int((jobs.status == "missing").sum()),
        sweep_dir / "table1.md",
    )
    return table


def log_to_wandb(cfg: DictConfig, sweep_dir: Path, table: pd.DataFrame) -> None:
    """Log the aggregated long table as a short W&B run of its own (group ``table1``) in the sweep dir."""
    lcfg = cfg.get("logger")
    if lcfg is None or str(lcfg.get("kind")) != "wandb" or str(lcfg.get("mode")) == "disabled":
        return
    import wandb

    from eif.logging.run_logger import wandb_dirs

    wdir = wandb_dirs(sweep_dir / "wandb")
    run = wandb.init(
        project=str(lcfg.project),
        entity=lcfg.get("entity"),
        group="table1",
        job_type="aggregate",
        name=f"table1-{sweep_dir.name}",
        dir=str(wdir),
        mode=str(lcfg.mode),
        settings=wandb.Settings(init_timeout=float(lcfg.get("init_timeout", 60)), silent=True),
    )
    try:
        run.log({"table1/aggregate": wandb.Table(dataframe=table.astype({"seed": "float"}))})
    finally:
        run.finish()


class SweepTablesCallback(Callback):
    """Rebuild a sweep's tables after every job (best effort, so a sweep that dies still has them)
    and when the sweep ends. Subclasses set ``build`` (sweep dir -> long table) and may extend
    :meth:`finished`."""

    build: Callable[[Path], pd.DataFrame]

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        try:
            type(self).build(Path(config.hydra.sweep.dir))
        except Exception as err:  # noqa: BLE001 - a table must never take a job down
            log.warning("%s after a job failed: %s", type(self).__name__, err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        self.finished(config, sweep_dir, type(self).build(sweep_dir))

    def finished(self, config: DictConfig, sweep_dir: Path, table: pd.DataFrame) -> None:
        """Called once with the final table."""


class Table1Callback(SweepTablesCallback):
    """Table 1 after every job and at the end; the final table also goes to W&B."""

    build = staticmethod(aggregate)

    def finished(self, config: DictConfig, sweep_dir: Path, table: pd.DataFrame) -> None:
        try:
            log_to_wandb(config, sweep_dir, table)
        except Exception as err:  # noqa: BLE001 - the files are written; W&B is extra
            log.warning("logging the aggregated table to W&B failed: %s", err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eif.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    aggregate(args.sweep_dir)
    print(args.sweep_dir / "table1.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
