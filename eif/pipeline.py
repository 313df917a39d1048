"""Run one job: validate the config, open the logger, run the requested stages, always close."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eif.config import validate
from eif.logging.run_logger import RunLogger, build_logger
from eif.stages import registry
from eif.stages.base import Context
from eif.utils import preempt
from eif.utils.device import resolve_device
from eif.utils.errors import EifError
from eif.utils.io import write_json
from eif.utils.provenance import provenance
from eif.utils.seed import seed_everything
from eif.utils.store import ArtifactStore

log = logging.getLogger("eif")
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise

OmegaConf.register_new_resolver("join", lambda xs: "+".join(str(x) for x in xs), replace=True)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.stages`` in order; returns {stage: artifact dir} plus timings."""
    validate(cfg)
    preempt.install()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    device = resolve_device(str(cfg.device))
    store = ArtifactStore(cfg.paths.store_dir)
    logger: RunLogger = RunLogger()
    exit_code = 1
    try:
        logger = build_logger(cfg, run_dir)
        ctx = Context(
            cfg=cfg, store=store, logger=logger, run_dir=run_dir, device=device, registry=registry()
        )
        t0 = time.perf_counter()
        for name in cfg.stages:
            ctx.require(str(name))
        record = {
            "stages": list(cfg.stages),
            "keys": {n: ctx.key(n) for n in ctx.outputs},
            "artifacts": {n: str(p) for n, p in ctx.outputs.items()},
            "compute_seconds": ctx.timings,
            "wall_seconds": time.perf_counter() - t0,
            "config": OmegaConf.to_container(cfg, resolve=True),
            **provenance(),
        }
        write_json(run_dir / "run.json", record)
        exit_code = 0
        return record
    finally:
        logger.finish(exit_code)


def run_job_cli(cfg: DictConfig) -> dict[str, Any]:
    """``run_job`` for the command line: a user error becomes one line on stderr and exit code 2."""
    try:
        return run_job(cfg)
    except EifError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
