"""Stage ``report``: render ``report.html`` into the run dir from the outputs of the run's stages.

The page is a view of this run (which stages ran here), not a cached artifact: ``compute`` only
records the report settings, ``publish`` renders the page every time. List ``report`` last in
``stages``. Figures and tables of the other stages reach W&B through their own ``publish``; this
stage logs the page itself as an artifact.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from eif.report import run_report
from eif.stages.base import Context, Stage, plain
from eif.utils.io import write_json, write_text

log = logging.getLogger(__name__)


def _fields(cfg: DictConfig) -> dict:
    return {"report": plain(cfg.report)}


def _compute(ctx: Context, out: Path) -> None:
    write_json(
        out / "report.json",
        {"settings": plain(ctx.cfg.report), "note": "report.html is rendered into each run dir by publish"},
    )


def _publish(ctx: Context, out: Path) -> None:
    cfg = ctx.cfg
    outputs = {k: v for k, v in ctx.outputs.items() if k != "report"}
    train_load = test_load = None
    if {"influence", "relabel"} & set(outputs):
        data = ctx.data()
        train_load, test_load = data.train.load, data.test.load
    title = (
        f"eif run: {cfg.dataset.name}, {cfg.model.name}, {cfg.loss.name}, noise {cfg.noise.name}, "
        f"seed {cfg.seed}"
    )
    subtitle = f"stages: {', '.join(str(s) for s in cfg.stages)}; run dir: {ctx.run_dir.name}"
    page = run_report.build(
        title, subtitle, outputs, plain(cfg.report), int(cfg.detect.group), train_load, test_load
    )
    path = ctx.run_dir / "report.html"
    write_text(path, page)
    log.info("report: %s (%.1f MB)", path, path.stat().st_size / 1e6)
    print(f"report: {path}", flush=True)
    ctx.logger.artifact("report", "report", [path])


STAGE = Stage(name="report", deps=(), fields=_fields, compute=_compute, publish=_publish)
