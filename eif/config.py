"""The whole job's settings, validated in one go before any work starts.

:func:`load_job` turns the composed Hydra config into a :class:`JobConfig`: every value typed and
range-checked (one :class:`EifError` line naming the key otherwise), unknown keys rejected, stage
names checked, and the cross-setting checks of every stage the job runs. The model-definition
groups (``dataset``, ``model``, ``loss``, ``noise``) and the job-level settings are declared here;
each stage module declares its own group (``Stage.config``), so adding a stage adds its group.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, PositiveFloat, create_model

from eif.data.config import DatasetConfig
from eif.data.noise import NoiseConfig
from eif.losses.base import LossConfig
from eif.methods.base import MethodConfig
from eif.models.config import ModelConfig
from eif.settings import DEVICE, DISPLAY, RUN, Settings, parse, setting
from eif.utils.errors import EifError


class LoggerConfig(Settings):
    """``logger``: ``wandb`` (``mode`` offline by default: no network needed) or ``none``."""

    kind: Literal["wandb", "none"] = "wandb"
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "eif"
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    init_timeout: PositiveFloat = 60.0


class PathsConfig(Settings):
    """``paths``: where data, outputs, the artifact store and caches live."""

    root_dir: str
    data_dir: str
    output_dir: str
    store_dir: str
    cache_dir: str


class StoreConfig(Settings):
    """``store``: how concurrent jobs coordinate through lock directories (seconds)."""

    # A lock whose heartbeat has not moved for this long (waiter's clock) belongs to a dead or frozen job.
    stale_after_s: PositiveFloat = 120.0
    heartbeat_s: PositiveFloat = 10.0


class JobBase(Settings):
    """Job-level settings and the model-definition groups; the stage groups are added by :func:`job_model`."""

    stages: tuple[str, ...] = setting(unkeyed=RUN)
    seed: int
    device: str = setting("auto", unkeyed=DEVICE)
    # Progress bars: null = on when stdout is a terminal and not under SLURM.
    progress: bool | None = setting(None, unkeyed=DISPLAY)
    dataset: DatasetConfig
    model: ModelConfig
    loss: LossConfig
    noise: NoiseConfig
    # Attribution methods by name (conf/methods/<name>.yaml), selected with methods=[eif,if,...].
    methods: dict[str, MethodConfig] = {}
    logger: LoggerConfig = setting(LoggerConfig(), unkeyed=RUN)
    paths: PathsConfig = setting(unkeyed=RUN)
    store: StoreConfig = setting(StoreConfig(), unkeyed=RUN)
    # Cluster settings of conf/local/<name>.yaml, read by the SLURM launcher profiles only.
    cluster: dict[str, Any] | None = setting(None, unkeyed=RUN)
    # conf/local/default.yaml (machine settings that are not @package _global_); empty by default
    local: dict[str, Any] | None = setting(None, unkeyed=RUN)


@cache
def job_model() -> type[JobBase]:
    """:class:`JobBase` plus one field per stage config group (``Stage.config``)."""
    from eif.stages import registry

    groups: dict[str, Any] = {}
    for stage in registry().values():
        if stage.config is not None:
            name, cls = stage.config
            groups[name] = (cls, ...)  # values: the group's YAML (docs/architecture.md, "Stages")
    return create_model("JobConfig", __base__=JobBase, **groups)


def load_job(cfg: Any, check_stages: bool = True) -> Any:
    """Validate a composed config into a ``JobConfig``; with ``check_stages`` also the stage names
    and every requested stage's (and dependency's) cross-setting checks."""
    from eif.stages import closure

    if isinstance(cfg, BaseModel):
        job = cfg
    else:
        stages = cfg.get("stages") if hasattr(cfg, "get") else None
        if isinstance(stages, str) or (stages is not None and not hasattr(stages, "__iter__")):
            raise EifError(
                f"stages must be a list of stage names, e.g. stages=[train,evaluate], got {stages!r}"
            )
        job = parse(job_model(), cfg, "")
    if check_stages:
        for stage in closure(job.stages, job):
            if stage.check is not None:
                stage.check(job)
    return job
