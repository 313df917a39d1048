"""The whole job's settings, validated in one go before any work starts.

:func:`load_job` turns the composed Hydra config into a :class:`JobConfig`: every value typed and
range-checked (one :class:`EifError` line naming the key otherwise), unknown keys rejected, stage
names checked, and the cross-setting checks of every stage the job runs (:func:`check_job`).

:class:`JobConfig` declares every field statically, so ``job.train.epochs`` is typed: the
model-definition groups (``dataset``, ``model``, ``loss``, ``noise``), the job-level settings, and one
field per stage config group. Each stage still declares its own group (``Stage.config``); the field
here must name the same group and class (``tests/test_pipeline.py`` checks every registered stage), and
a stage whose group is not declared here is still validated: :func:`job_model` adds its field, untyped
for the type checker, until it is declared.
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
from eif.stages import closure, registry
from eif.stages.clean import CleanConfig
from eif.stages.detect import DetectConfig
from eif.stages.embed import EmbedConfig
from eif.stages.evaluate import EvaluateConfig
from eif.stages.influence import InfluenceConfig
from eif.stages.lds import LdsConfig
from eif.stages.mine import MineConfig
from eif.stages.relabel import RelabelConfig
from eif.stages.report import ReportConfig
from eif.stages.retrain import RetrainStageConfig
from eif.stages.stats import StatsConfig
from eif.stages.survey import SurveyConfig
from eif.stages.train import TrainConfig
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


class JobConfig(Settings):
    """The whole job: job-level settings, the model-definition groups and every stage's config group."""

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
    # One field per stage config group (``Stage.config``), in pipeline order; values: the group's YAML.
    train: TrainConfig
    evaluate: EvaluateConfig
    embed: EmbedConfig
    mine: MineConfig
    influence: InfluenceConfig
    retrain: RetrainStageConfig
    stats: StatsConfig
    detect: DetectConfig
    relabel: RelabelConfig
    survey: SurveyConfig
    report: ReportConfig
    lds: LdsConfig
    clean: CleanConfig


def stage_groups() -> dict[str, type[Settings]]:
    """``{group: settings class}`` of every registered stage that declares a config group."""
    return {stage.config[0]: stage.config[1] for stage in registry().values() if stage.config is not None}


@cache
def job_model() -> type[JobConfig]:
    """:class:`JobConfig`, plus a field for each registered stage group it does not declare yet."""
    missing: dict[str, Any] = {}
    for name, cls in stage_groups().items():
        declared = JobConfig.model_fields.get(name)
        if declared is None:
            missing[name] = (cls, ...)  # values: the group's YAML
        elif declared.annotation is not cls:
            raise TypeError(f"JobConfig.{name} is {declared.annotation}, but stage group {name} is {cls}")
    return create_model("JobConfig", __base__=JobConfig, **missing) if missing else JobConfig


def check_job(job: JobConfig) -> None:
    """The cross-setting checks of every stage the job runs (and of the stages they read)."""
    for stage in closure(job.stages, job):
        if stage.check is not None:
            stage.check(job)


def load_job(cfg: Any, check_stages: bool = True) -> JobConfig:
    """Validate a composed config (a DictConfig or plain mapping) into a :class:`JobConfig`, once; a
    ``JobConfig`` is taken as it is. With ``check_stages`` also the stage names and every requested
    stage's (and dependency's) cross-setting checks (:func:`check_job`)."""
    if isinstance(cfg, JobConfig):
        job = cfg
    elif isinstance(cfg, BaseModel):
        raise TypeError(f"load_job takes a composed config or a JobConfig, not {type(cfg).__name__}")
    else:
        stages = cfg.get("stages") if hasattr(cfg, "get") else None
        if isinstance(stages, str) or (stages is not None and not hasattr(stages, "__iter__")):
            raise EifError(
                f"stages must be a list of stage names, e.g. stages=[train,evaluate], got {stages!r}"
            )
        job = parse(job_model(), cfg, "")
    if check_stages:
        check_job(job)
    return job
