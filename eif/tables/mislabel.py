"""Tables 2 and 3 of the mislabel experiments across a sweep's jobs, and an index page of their reports.

Each job dir holds ``artifacts/relabel/relabel.json`` and ``runtime.csv`` and its ``report.html``.
Expected jobs come from the sweep's ``multirun.yaml`` (:func:`eif.tables.sweep.expected_jobs`), so
jobs that failed or have not run are empty cells, never an error. Writes ``table2.{csv,md}``,
``table2_strict.{csv,md}``, ``table3.{csv,md}`` and ``index.html`` into the sweep dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from eif import pages
from eif.tables.format import write_table
from eif.tables.sweep import SweepTablesCallback, config_identity, expected_jobs
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)
IDENT = ("dataset", "loss", "noise", "seed")


def collect(sweep_dir: Path) -> pd.DataFrame:
    """One row per (job, method): identity, relabel accuracy (strict, second_label), runtimes;
    status ``ok`` or ``missing`` (expected by the sweep grid but without results)."""
    sweep_dir = Path(sweep_dir)
    rows: list[dict] = []
    seen: list[dict] = []
    for rj in sorted(sweep_dir.glob("*/artifacts/relabel/relabel.json")):
        job = rj.parents[2]
        try:
            ident, info = config_identity(job, IDENT), read_json(rj)
            runtime = pd.read_csv(rj.parent / "runtime.csv")
        except (OSError, ValueError, KeyError) as err:
            log.warning("sweep: skipping unreadable job %s (%s)", job, err)
            continue
        seen.append(ident)
        acc = info["accuracy"]
        for r in runtime.to_dict("records"):
            rows.append(
                {
                    **ident,
                    "method": r["method"],
                    "status": "ok",
                    "job": job.name,
                    "report": f"{job.name}/report.html" if (job / "report.html").is_file() else "",
                    "strict": acc["strict"],
                    "second_label": acc["second_label"],
                    "detection_s": r["detection_s"],
                    "recommendation_s": r["recommendation_s"],
                }
            )
    for ov in expected_jobs(sweep_dir):
        ident = {k: ov.get(k) for k in IDENT}
        # A job matches on the keys the sweep sets (the rest come from the config defaults).
        if not any(all(str(s[k]) == str(ov[k]) for k in IDENT if k in ov) for s in seen):
            rows.append({**ident, "method": "EIF", "status": "missing"})
    return pd.DataFrame(
        rows,
        columns=[
            *IDENT,
            "method",
            "status",
            "job",
            "report",
            "strict",
            "second_label",
            "detection_s",
            "recommendation_s",
        ],
    )


def _mean_std(x: pd.Series, digits: int) -> str:
    x = pd.Series(pd.to_numeric(x, errors="coerce")).dropna()
    if x.empty:
        return ""
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else f"{x.mean():.{digits}f}"


def table2(long: pd.DataFrame, column: str = "second_label") -> pd.DataFrame:
    """Rows (noise, loss), columns dataset; cells mean ± std over seeds of relabel accuracy in %."""
    acc = long[long.method == "EIF"].assign(
        v=lambda f: pd.Series(pd.to_numeric(f[column], errors="coerce")) * 100
    )
    cells = acc.groupby(["noise", "loss", "dataset"], dropna=False)["v"].agg(lambda s: _mean_std(s, 2))
    return cells.unstack("dataset").fillna("").reset_index()


def table3(long: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, method): detection and recommendation seconds, mean ± std over jobs."""
    g = long.groupby(["dataset", "method"], dropna=False)
    cells = {c: g[c].agg(lambda s: _mean_std(s, 2)) for c in ("detection_s", "recommendation_s")}
    return pd.DataFrame(cells).reset_index()


def aggregate(sweep_dir: str | Path) -> pd.DataFrame:
    """Write Table 2 (both counting rules), Table 3 and ``index.html``; returns the long table."""
    sweep_dir = Path(sweep_dir)
    long = collect(sweep_dir)
    t2, t2s, t3 = table2(long), table2(long, "strict"), table3(long)
    write_table(t2, sweep_dir, "table2")
    write_table(t2s, sweep_dir, "table2_strict")
    write_table(t3, sweep_dir, "table3")
    jobs = [
        {
            **{k: r[k] for k in (*IDENT, "status")},
            "report": r["report"] if isinstance(r["report"], str) else "",
        }
        for r in long.drop_duplicates("job").to_dict("records")
    ]
    tables = [
        ("Table 2: relabel accuracy (%), reference second-label rule", t2),
        ("Table 2 (strict: top-1 equals the clean label)", t2s),
        ("Table 3: runtime (s)", t3),
    ]
    page = pages.render(
        "sweep_index.html",
        title=f"eif sweep {sweep_dir.name}",
        subtitle="missing jobs are empty cells",
        nav=[],
        tables=[(title, pages.cells(t)) for title, t in tables],
        jobs=jobs,
    )
    write_text(sweep_dir / "index.html", page)
    return long


class MislabelTablesCallback(SweepTablesCallback):
    """Hydra callback (``sweeps/table2.yaml``, ``table3.yaml``): Tables 2 and 3 and ``index.html``."""

    build = staticmethod(aggregate)
    name = "mislabel"
