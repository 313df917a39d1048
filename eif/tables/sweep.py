"""What every sweep table shares: the jobs a sweep expects, their overrides and identity (data set,
loss, seed), W&B logging, and the Hydra callback that rebuilds a sweep's tables after every job and
when the sweep ends.

    python -m eif.tables <sweep_dir>      # rebuild every table the sweep's jobs have results for
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from eif.logging.run_logger import wandb_dirs

log = logging.getLogger(__name__)


def expected_jobs(sweep_dir: Path) -> list[dict[str, str]]:
    """The sweep overrides of every job the sweep launches: the product of its swept parameters.

    Parameters come from ``hydra.sweeper.params`` and from sweep overrides on the command line
    (``a=x,y``); fixed overrides are the same for every job and left out.
    """
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
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


def job_overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for s in OmegaConf.to_container(OmegaConf.load(path)) or []:
        key, _, value = str(s).partition("=")
        out[key.lstrip("+~")] = value
    return out


WandbMode = Literal["online", "offline", "disabled", "shared"]
WANDB_MODES: dict[str, WandbMode] = {"online": "online", "offline": "offline", "shared": "shared"}
MODEL_KEY = "table1_model"  # sweep option named <dataset>-<loss>-<seed> (sweeps/table1_model/)


def job_identity(overrides: dict[str, str]) -> dict[str, Any]:
    """(dataset, loss, seed) of a job from its sweep overrides, as far as they say."""
    ident: dict[str, Any] = {k: overrides.get(k) for k in ("dataset", "loss", "seed")}
    if MODEL_KEY in overrides:
        ident["dataset"], ident["loss"], ident["seed"] = overrides[MODEL_KEY].split("-")
    if ident["seed"] is not None:
        ident["seed"] = int(ident["seed"])
    return ident


def config_identity(job_dir: Path, keys: Sequence[str]) -> dict[str, Any]:
    """A job's ``dataset``, ``loss``, ``noise`` (their ``name``) and ``seed``, as far as ``keys`` asks,
    from the config Hydra saved in its run dir."""
    cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    return {k: int(cfg.seed) if k == "seed" else str(OmegaConf.select(cfg, f"{k}.name")) for k in keys}


def log_to_wandb(cfg: DictConfig, sweep_dir: Path, table: pd.DataFrame, name: str) -> None:
    """Log an aggregated long table as a short W&B run of its own (group ``name``) in the sweep dir."""
    lcfg = cfg.get("logger")
    if lcfg is None or str(lcfg.get("kind")) != "wandb":
        return
    mode = WANDB_MODES.get(str(lcfg.get("mode")))  # None: disabled (the logger settings allow no other)
    if mode is None:
        return
    import wandb  # only here: importing wandb takes seconds, and most tables are never logged

    wdir = wandb_dirs(sweep_dir / "wandb")
    run = wandb.init(
        project=str(lcfg.project),
        entity=lcfg.get("entity"),
        group=name,
        job_type="aggregate",
        name=f"{name}-{sweep_dir.name}",
        dir=str(wdir),
        mode=mode,
        settings=wandb.Settings(init_timeout=float(lcfg.get("init_timeout", 60)), silent=True),
    )
    try:
        frame = table.astype({"seed": "float"}) if "seed" in table else table
        run.log({f"{name}/aggregate": wandb.Table(dataframe=frame)})
    finally:
        run.finish()


class SweepTablesCallback(Callback):
    """Rebuild a sweep's tables after every job (best effort, so a sweep that dies still has them)
    and when the sweep ends, then log the final long table to W&B as a run of group ``name``.
    Subclasses set ``build`` (sweep dir -> long table) and ``name``."""

    build: Callable[[Path], pd.DataFrame]
    name: str

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        try:
            type(self).build(Path(config.hydra.sweep.dir))
        except Exception as err:  # noqa: BLE001 - a table must never take a job down
            log.warning("%s after a job failed: %s", type(self).__name__, err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = type(self).build(sweep_dir)
        try:
            log_to_wandb(config, sweep_dir, table, self.name)
        except Exception as err:  # noqa: BLE001 - the files are written; W&B is extra
            log.warning("logging the %s table to W&B failed: %s", self.name, err)
