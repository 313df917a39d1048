"""Run loggers: one interface, a Weights & Biases implementation and a no-op one.

W&B runs ``offline`` unless ``logger.mode`` says otherwise, and every directory it writes
(run files, artifact staging, cache, config) lives inside the run's output dir, so nothing leaks
into the home directory and nothing waits for a network that is not there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class RunLogger:
    """The no-op logger (``logger=none``); also the interface every logger implements."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log time-series values (e.g. per-epoch loss)."""

    def summary(self, values: dict[str, Any]) -> None:
        """Set final, run-level values (e.g. test Recall@1)."""

    def table(self, name: str, frame: pd.DataFrame) -> None:
        """Log a table."""

    def image(self, name: str, path: Path) -> None:
        """Log an image file (PNG)."""

    def artifact(self, name: str, kind: str, paths: Sequence[Path], metadata: dict | None = None) -> None:
        """Log files as a versioned artifact."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; always called, also when the job fails."""


def wandb_dirs(wdir: Path) -> Path:
    """Point every directory W&B writes (run files, artifact staging, cache, config) inside ``wdir``.

    wandb reads these variables at init time; this keeps all its bytes inside the run (or sweep) dir.
    """
    for var, sub in (
        ("WANDB_DIR", ""),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        (wdir / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(wdir / sub)
    return wdir


class WandbLogger(RunLogger):
    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        import wandb

        self._wandb = wandb
        wdir = wandb_dirs(run_dir / "wandb")
        os.environ["WANDB_MODE"] = str(cfg.logger.mode)
        lcfg = cfg.logger
        self.run = wandb.init(
            project=lcfg.project,
            entity=lcfg.get("entity"),
            group=lcfg.get("group"),
            job_type=lcfg.get("job_type"),
            name=lcfg.get("name"),
            tags=list(lcfg.get("tags") or []),
            dir=str(wdir),
            mode=str(lcfg.mode),
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
            settings=wandb.Settings(init_timeout=float(lcfg.get("init_timeout", 60)), silent=True),
        )

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.run.summary[k] = v

    def table(self, name: str, frame: pd.DataFrame) -> None:
        self.run.log({name: self._wandb.Table(dataframe=frame.reset_index(drop=True))})

    def image(self, name: str, path: Path) -> None:
        self.run.log({name: self._wandb.Image(str(path))})

    def artifact(self, name: str, kind: str, paths: Sequence[Path], metadata: dict | None = None) -> None:
        art = self._wandb.Artifact(name=name, type=kind, metadata=metadata or {})
        for p in paths:
            art.add_file(str(p), name=Path(p).name)
        self.run.log_artifact(art)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def build_logger(cfg: DictConfig, run_dir: Path) -> RunLogger:
    kind = cfg.logger.kind
    if kind == "none":
        return RunLogger()
    if kind == "wandb":
        return WandbLogger(cfg, run_dir)
    from eif.utils.errors import EifError

    raise EifError(f"logger.kind must be wandb or none, got {kind!r}")
