"""Stage ``report``: render ``report.html`` into the run dir from the outputs of the run's stages.

The page is a view of this run (which stages ran here), not a cached artifact: ``compute`` only
records the report settings, ``publish`` renders the page every time. List ``report`` last in
``stages``. Figures and tables of the other stages reach W&B through their own ``publish``; this
stage logs the page itself as an artifact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import PositiveInt

from eif.report import run_report
from eif.settings import Settings
from eif.stages.base import Run, Stage
from eif.utils.io import write_json, write_text

log = logging.getLogger(__name__)


class ReportConfig(Settings):
    """``report``: confusion pairs shown (Fig. 3), training images per side, relabel suggestions shown
    with ``class_examples`` examples of the recommended class (Fig. 5), thumbnail size in pixels."""

    pairs: PositiveInt = 4
    top_k: PositiveInt = 5
    suggestions: PositiveInt = 8
    class_examples: PositiveInt = 4
    thumb_px: PositiveInt = 96


class ReportSettings(Settings):
    report: ReportConfig
    group: int


def _settings(job: Any, env: Any) -> ReportSettings:
    return ReportSettings(report=job.report, group=job.detect.group)


def _compute(s: ReportSettings, run: Run, out: Path) -> None:
    write_json(
        out / "report.json",
        {
            "settings": s.report.model_dump(mode="json"),
            "note": "report.html is rendered into each run dir by publish",
        },
    )


def _publish(s: ReportSettings, run: Run, out: Path) -> None:
    outputs = {k: v for k, v in run.outputs.items() if k != "report"}
    train_load = test_load = None
    if {"influence", "relabel"} & set(outputs):
        data = run.data()
        train_load, test_load = data.train.load, data.test.load
    j = run.job
    title = f"eif run: {j.dataset}, {j.model}, {j.loss}, noise {j.noise}, seed {j.seed}"
    subtitle = f"stages: {', '.join(outputs)}; run dir: {run.run_dir.name}"
    page = run_report.build(title, subtitle, outputs, s.report.model_dump(), s.group, train_load, test_load)
    path = run.run_dir / "report.html"
    write_text(path, page)
    log.info("report: %s (%.1f MB)", path, path.stat().st_size / 1e6)
    run.logger.artifact(f"report-{run.run_dir.name}", "report", [path])


STAGE = Stage(
    name="report", settings=_settings, compute=_compute, publish=_publish, config=("report", ReportConfig)
)
