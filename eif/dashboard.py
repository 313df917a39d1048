"""``eif dashboard <sweep dir>``: a W&B report of a sweep, built with wandb-workspaces.

The report holds, per run group ``<dataset>-<loss>-<noise>`` (the jobs' ``logger.group``), Table 1: the
runs table with every Table 1 summary key (``table1/pairs/K=<K>/{improvement,pvalue}``, groups alike)
as columns, the job's ``table1/stats`` table and bar charts of the improvements and p-values; then the
robustness table (``table1_robust/...`` keys, the methods against each other, their random controls and
drift), the LDS table (``lds/...``) and the runtime table (``influence/*_seconds``, ``retrain/seconds``,
``relabel/runtime``), and a last grid with every other key the jobs logged. Panels name the keys and
tables the jobs logged, as each job's logger recorded them (``<job>/wandb/logged_keys.json``), so the
report shows what was logged and nothing that was not.

Online (a W&B API key and ``WANDB_MODE`` not offline/disabled) the report is saved and its URL printed.
Offline the report's spec (wandb-workspaces' own ``ReportViewspec`` model, as JSON) is written to
``<sweep dir>/dashboard.json``; ``eif dashboard --publish <that file>`` saves it once online (the runs
must have been uploaded with ``wandb sync`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eif.logging.run_logger import LOGGED_KEYS, wandb_api_key
from eif.utils.errors import EifError
from eif.utils.io import write_text

SPEC_NAME = "dashboard.json"
# The report's sections after the per-group Table 1: (title, summary-key prefixes, what the section is).
SECTIONS = (
    (
        "Robustness",
        ("table1_robust/", "table1/robustness_"),
        "Each method against the others, against its random control and against re-training alone "
        "(drift): mean difference of Δd and its p-value per comparison (docs/table1.md).",
    ),
    (
        "LDS",
        ("lds/",),
        "Linear datamodeling score per method, confusion kind and re-training horizon, with the noise "
        "ceiling, and removal of the top-k against k random samples (docs/lds.md).",
    ),
    (
        "Runtime",
        ("influence/", "retrain/seconds", "retrain/num_heads", "relabel/runtime"),
        "Wall seconds of each method's scores per confusion kind, with each IF's residuals, and of the "
        "batched re-training.",
    ),
)
TABLE1_PREFIX = "table1/"


@dataclass
class Job:
    """One job of the sweep as W&B saw it: its group and the summary keys it logged."""

    name: str
    group: str
    project: str
    entity: str | None
    scalars: set[str] = field(default_factory=set)  # summary keys
    tables: set[str] = field(default_factory=set)
    history: set[str] = field(default_factory=set)  # time series (per-epoch training curves)
    images: set[str] = field(default_factory=set)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="eif dashboard",
        description="Build a W&B report of a sweep's Table 1, robustness, LDS and runtime tables.",
    )
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="the sweep dir (holds the jobs' dirs)")
    parser.add_argument("--publish", type=Path, metavar="SPEC", help="save a spec written offline")
    parser.add_argument("--entity", help="W&B entity (default: the jobs' logger.entity, else yours)")
    parser.add_argument("--project", help="W&B project (default: the jobs' logger.project)")
    parser.add_argument("--title", help="the report's title (default: from the sweep dir)")
    args = parser.parse_args(list(argv))
    if (args.sweep_dir is None) == (args.publish is None):
        parser.error("give a sweep dir, or --publish SPEC")
    return args


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job of ``sweep_dir`` that logged to W&B (``<job>/wandb/logged_keys.json``), in job order."""
    if not sweep_dir.is_dir():
        raise EifError(f"dashboard: {sweep_dir} is not a directory")
    files = sorted(sweep_dir.glob(f"*/wandb/{LOGGED_KEYS}"), key=lambda p: _natural(p.parts[-3]))
    jobs = []
    for path in files:
        logged = json.loads(path.read_text())
        run = logged["run"]
        job = Job(run["name"], run["group"] or "", run["project"] or "eif", run.get("entity"))
        job.scalars, job.tables = set(logged["summary"]), set(logged["tables"])
        job.history, job.images = set(logged["history"]), set(logged["images"])
        jobs.append(job)
    if not jobs:
        raise EifError(
            f"dashboard: no job under {sweep_dir} logged to W&B (no <job>/wandb/{LOGGED_KEYS}); run the "
            "sweep with logger=wandb (the default), or point at the sweep dir that holds the jobs' dirs"
        )
    return jobs


def _natural(key: str) -> tuple:
    """Sort key that orders K=30 before K=100."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


def _grid(wr: Any, name: str, filters: str, scalars: Iterable[str], tables: Iterable[str], bars=()) -> Any:
    """A panel grid over the runs ``filters`` selects: ``scalars`` as runs-table columns, one summary
    table panel per logged table, one bar chart per list of summary keys in ``bars`` (title, keys)."""
    runset = wr.Runset(
        entity="",
        project="",
        name=name,
        filters=filters,
        visible_columns=["run:displayName", *(f"summary:{k}" for k in sorted(scalars, key=_natural))],
    )
    panels = [wr.WeavePanelSummaryTable(table_name=t) for t in sorted(tables)]
    panels += [
        wr.BarPlot(title=title, metrics=[wr.SummaryMetric(k) for k in sorted(keys, key=_natural)])
        for title, keys in bars
        if keys
    ]
    return wr.PanelGrid(runsets=[runset], panels=panels)


def _bars(keys: set[str], prefix: str) -> list[tuple[str, list[str]]]:
    """Bar charts of the keys under ``prefix``: one per last path part (improvement, pvalue, mean, ...)."""
    by_leaf: dict[str, list[str]] = {}
    for k in keys:
        if k.startswith(prefix):
            by_leaf.setdefault(k.rsplit("/", 1)[-1], []).append(k)
    return [(f"{prefix}*/{leaf}", ks) for leaf, ks in sorted(by_leaf.items())]


def build_report(jobs: list[Job], title: str, project: str, entity: str) -> Any:
    """The wandb-workspaces ``Report`` of ``jobs`` (module doc)."""
    import wandb_workspaces.reports.v2.interface as wr  # optional dependency (extra "dashboard")

    blocks: list[Any] = [
        wr.P(
            f"Built by `eif dashboard` from {len(jobs)} jobs. Positive Δd improvement = EIF moves the "
            "confused pair apart more than IF; p-values: t-test over pairs, Wilcoxon over groups."
        ),
        wr.H1("Table 1"),
    ]
    used_scalars: set[str] = set()
    used_tables: set[str] = set()
    for group in sorted({j.group for j in jobs}):
        members = [j for j in jobs if j.group == group]
        scalars = {k for j in members for k in j.scalars if k.startswith(TABLE1_PREFIX)}
        tables = {k for j in members for k in j.tables if k in ("table1/stats", "retrain/distances")}
        blocks += [
            wr.H2(f"Table 1: {group}"),
            wr.P(f"{len(members)} runs: {', '.join(j.name for j in members)}."),
            _grid(wr, group, f"Metric('group') == '{group}'", scalars, tables, _bars(scalars, TABLE1_PREFIX)),
        ]
        used_scalars |= scalars
        used_tables |= tables
    every_scalar = {k for j in jobs for k in j.scalars}
    every_table = {k for j in jobs for k in j.tables}
    all_runs = " or ".join(f"Metric('group') == '{g}'" for g in sorted({j.group for j in jobs}))
    for name, prefixes, about in SECTIONS:
        scalars = {k for k in every_scalar if k.startswith(prefixes)}
        tables = {k for k in every_table if k.startswith(prefixes)}
        if not scalars and not tables:
            continue
        bars = [b for p in prefixes for b in _bars(scalars, p)]
        blocks += [wr.H1(name), wr.P(about), _grid(wr, name, all_runs, scalars, tables, bars)]
        used_scalars |= scalars
        used_tables |= tables
    rest_scalars, rest_tables = every_scalar - used_scalars, every_table - used_tables
    rest_tables |= {k for j in jobs for k in j.images}
    history = sorted({k for j in jobs for k in j.history}, key=_natural)
    if rest_scalars or rest_tables or history:
        grid = _grid(wr, "other", all_runs, rest_scalars, rest_tables)
        grid.panels += [wr.LinePlot(title=k, y=[k]) for k in history]
        blocks += [wr.H1("Everything else the jobs logged"), grid]
    return wr.Report(project=project, entity=entity, title=title[:128], blocks=blocks)


def report_spec(report: Any) -> str:
    """The report as wandb-workspaces' ``ReportViewspec`` JSON."""
    return report._to_model().model_dump_json(by_alias=True, exclude_none=True, indent=1)


def load_spec(text: str) -> Any:
    """A ``Report`` from :func:`report_spec`'s JSON, validated against wandb-workspaces' models."""
    import wandb_workspaces.reports.v2.interface as wr  # optional dependency (extra "dashboard")
    from pydantic import ValidationError
    from wandb_workspaces.reports.v2 import internal

    try:
        model = internal.ReportViewspec.model_validate_json(text)
    except ValidationError as err:
        raise EifError(f"dashboard: not a W&B report spec ({' '.join(str(err).split())[:200]})") from None
    return wr.Report._from_model(model)


def online() -> bool:
    """Whether a report can be saved: an API key, and W&B not told to stay offline."""
    return os.environ.get("WANDB_MODE", "online") not in ("offline", "disabled", "dryrun") and bool(
        wandb_api_key()
    )


def publish(report: Any, project: str, entity: str | None) -> str:
    """Save ``report`` (its run sets pointed at ``entity/project``) and return its URL."""
    import wandb

    entity = entity or wandb.Api().default_entity
    report.project, report.entity = project, entity
    for block in report.blocks:
        for runset in getattr(block, "runsets", None) or []:
            runset.entity, runset.project = entity, project
    report.save()
    return report.url


def run(args: argparse.Namespace) -> int:
    try:
        import wandb_workspaces  # noqa: F401 - optional dependency (extra "dashboard")
    except ImportError:
        raise EifError("eif dashboard needs wandb-workspaces: pip install 'eif[dashboard]'") from None
    if args.publish is not None:
        if not args.publish.is_file():
            raise EifError(f"dashboard: {args.publish} does not exist")
        report = load_spec(args.publish.read_text())
        if not online():
            raise EifError("dashboard --publish needs W&B online: `wandb login` (and WANDB_MODE unset)")
        print(f"dashboard: {publish(report, args.project or report.project, args.entity or report.entity)}")
        return 0
    sweep_dir: Path = args.sweep_dir.resolve()
    jobs = read_jobs(sweep_dir)
    project = args.project or jobs[0].project
    entity = args.entity or next((j.entity for j in jobs if j.entity), None) or ""
    title = args.title or f"eif: {sweep_dir.parent.name}/{sweep_dir.name}"
    report = build_report(jobs, title, project, entity)
    if online():
        print(f"dashboard: {publish(report, project, entity or None)}")
        return 0
    spec = sweep_dir / SPEC_NAME
    write_text(spec, report_spec(report))
    runs = f"{sweep_dir}/*/wandb/wandb/offline-run-*"
    print(
        f"dashboard: W&B is offline, so the report's spec went to {spec}; to publish it, upload the runs "
        f"(wandb sync {runs}), `wandb login`, then: eif dashboard --publish {spec}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``eif dashboard ...``: user errors are one ``error:`` line and exit code 2."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except EifError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
