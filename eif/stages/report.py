"""Stage ``report``: render ``report.html`` and, when the run has relabel suggestions, the review page
``review.html`` into the run dir from the outputs of the run's stages.

The pages are a view of this run (which stages ran here), not a cached artifact: ``compute`` only
records the report settings, ``publish`` renders them every time. List ``report`` last in
``stages``. Figures and tables of the other stages reach W&B through their own ``publish``; this
stage logs both pages as the run's ``report-<parent dir>-<run dir>`` artifact and the influence table of the
pairs the report shows, with their images (``report/influence``). Feature vectors (``dataset=features``)
have no images: the pages show each sample's path or ``index:<i>`` instead.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf
from pydantic import NonNegativeInt, PositiveInt

from eif.data.features import FeatureSet
from eif.report import review, run_report
from eif.settings import Settings, setting
from eif.stages.base import Run, Stage
from eif.utils.io import write_json, write_text

log = logging.getLogger(__name__)


class ReportConfig(Settings):
    """``report``: confusion pairs shown (Fig. 3), training images per side and method, confusion
    groups shown, relabel cards (Fig. 5) with their nearest ``neighbours`` and ``class_examples``
    examples of the current and the suggested class, thumbnail size in pixels; the review page:
    which suggestions it lists (``changes``, ``all`` queried, ``none``: no page), at most
    ``review_max`` (null: all), thumbnails of ``review_px`` and ``review_examples`` per class."""

    pairs: PositiveInt = 4
    top_k: PositiveInt = 5
    groups: PositiveInt = 5
    suggestions: PositiveInt = 8
    neighbours: PositiveInt = 8
    class_examples: PositiveInt = 4
    thumb_px: PositiveInt = 96
    review: Literal["changes", "all", "none"] = "changes"
    review_max: PositiveInt | None = 5000
    review_px: int = setting(64, ge=16, le=128)
    review_examples: NonNegativeInt = 3


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


def artifact_name(run_dir: Path) -> str:
    """``report-<parent>-<run dir>``, W&B's characters only: one artifact per run, also in sweeps,
    whose job dirs (``0``, ``1``, ...) repeat from sweep to sweep."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"report-{run_dir.parent.name}-{run_dir.name}")


def overrides(run_dir: Path) -> list[str]:
    """The run's Hydra overrides (``.hydra/overrides.yaml``; none for a run without that file, e.g.
    from the Python API)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _publish(s: ReportSettings, run: Run, out: Path) -> None:
    cfg = s.report
    outputs = {k: v for k, v in run.outputs.items() if k != "report"}
    train_load = test_load = None
    if {"influence", "relabel"} & set(outputs):
        data = run.data()
        if not isinstance(data.train, FeatureSet):  # feature vectors have no image to show
            train_load, test_load = data.train.load, data.test.load
    j = run.job
    title = f"eif run: {j.dataset}, {j.model}, {j.loss}, noise {j.noise}, seed {j.seed}"
    subtitle = f"stages: {', '.join(outputs)}; run dir: {run.run_dir.name}"
    page = run_report.build(title, subtitle, outputs, cfg.model_dump(), s.group, train_load, test_load)
    path = run.run_dir / "report.html"
    write_text(path, page)
    log.info("report: %s (%.1f MB)", path, path.stat().st_size / 1e6)
    pages = [path]
    if cfg.review != "none" and {"embed", "influence", "relabel"} <= set(outputs):
        settings = review.ReviewSettings(cfg.review, cfg.review_max, cfg.review_px, cfg.review_examples)
        text = review.build(
            f"Review label suggestions: {j.dataset}, {j.loss}, noise {j.noise}, seed {j.seed}",
            run.run_dir.name,
            outputs,
            s.group,
            train_load,
            settings,
            overrides=overrides(run.run_dir),
        )
        pages.append(run.run_dir / "review.html")
        write_text(pages[-1], text)
        log.info("review page: %s (%.1f MB)", pages[-1], pages[-1].stat().st_size / 1e6)
    if run.logger.active and {"embed", "influence"} <= set(outputs):
        table = run_report.influence_table(
            outputs["embed"], outputs["influence"], cfg.pairs, cfg.top_k, train_load, test_load, cfg.thumb_px
        )
        run.logger.table("report/influence", table)
    run.logger.artifact(artifact_name(run.run_dir), "report", pages)


STAGE = Stage(
    name="report", settings=_settings, compute=_compute, publish=_publish, config=("report", ReportConfig)
)
