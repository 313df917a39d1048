"""Run one job: check everything, then compute.

1. :func:`~eif.config.load_job`: every config value typed and range-checked (once), stage names, the
   cross-setting checks of every stage that will run.
2. Paths: the store, cache and run dirs must be writable.
3. :class:`Env` reads the data set, picks the settings left ``auto`` from it (:mod:`eif.resolve_auto`;
   the stages' checks run again on the resolved job),
   fingerprints every split and decodes every image (cached), and reports *all* unusable images in
   one line; then batch composition against the classes, and each stage's checks against the data
   (``Stage.check_data``).
4. :func:`make_plan`: every stage's typed settings and store key.
5. The model is built and fed one image of each transform it will see (channels, sizes).
6. The stages run; outputs are computed at most once (:class:`~eif.utils.store.ArtifactStore`).

Nothing is written to the store before step 6.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import torch
from omegaconf import DictConfig, OmegaConf

from eif.config import JobConfig, check_job, load_job
from eif.data.base import DataBundle, FileImageSet
from eif.data.build import load_data
from eif.data.fingerprint import DataCheck, FileIndex, check_bundle, file_digest
from eif.data.splits import Splits
from eif.evaluation.knn import set_device as set_faiss_device
from eif.logging.run_logger import RunLogger, build_logger
from eif.resolve_auto import resolve_job
from eif.settings import Settings, dump, keyed
from eif.stages import closure, registry
from eif.stages.base import Job, Run, Stage
from eif.utils import console, preempt
from eif.utils.device import resolve_device
from eif.utils.errors import EifError, JobExit, NothingToExplain
from eif.utils.io import LockLost, write_json
from eif.utils.provenance import provenance
from eif.utils.requirements import check_job as check_requirements
from eif.utils.seed import seed_everything
from eif.utils.store import ArtifactStore, spec_key

log = logging.getLogger("eif")
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise


class Env:
    """The job's inputs as stage settings see them: data fingerprints and file digests.

    ``job`` is the given job with every ``auto`` setting picked from the data (:mod:`eif.resolve_auto`);
    the data set is read and checked on first use; every problem with its images is one error."""

    def __init__(self, job: JobConfig, cache_dir: Path | None, progress: bool = False) -> None:
        self.given = job
        self.cache_dir = cache_dir
        self.progress = progress
        self.resolved: dict[str, Any] = {}
        self._indexes: dict[Path, FileIndex] = {}
        self._splits: Splits | None = None

    @property
    def splits(self) -> Splits:
        """The data set's splits as read (no transforms, clean labels); read on first use."""
        if self._splits is None:
            self._splits = self.given.dataset.load()
        return self._splits

    @cached_property
    def job(self) -> JobConfig:
        """The given job with its ``auto`` settings resolved and the stages' checks run on the values
        picked (the given job when it has none)."""
        job, self.resolved = resolve_job(self.given, self)
        if job is not self.given:
            check_job(job)
        return job

    def file_index(self, images: FileImageSet) -> FileIndex:
        """The cached per-file image index of a file image set's root."""
        if images.root not in self._indexes:
            self._indexes[images.root] = FileIndex(images.root, self.cache_dir)
        return self._indexes[images.root]

    @cached_property
    def bundle(self) -> DataBundle:
        return load_data(self.job.dataset, self.job.noise, self.job.seed, self.splits)

    @cached_property
    def data_check(self) -> DataCheck:
        ds = self.job.dataset
        norm = ds.transforms
        check = check_bundle(self.bundle, self.cache_dir, norm.channels, norm.to_rgb, self.progress)
        if check.problems:
            n = len(check.problems)
            shown = "; ".join(check.problems[:8]) + (f"; and {n - 8} more" if n > 8 else "")
            hint = ""
            if any("mode" in p for p in check.problems):
                hint = " (dataset.transforms.to_rgb=true with 3-entry mean/std converts every image to RGB)"
            raise EifError(
                f"{ds.name}: {n} image{'s' if n > 1 else ''} under {ds.root} cannot be used: {shown}{hint}"
            )
        b, batch = self.bundle, ds.batch
        if b.num_train_classes < batch.classes_per_batch:
            raise EifError(
                f"dataset.batch.classes_per_batch={batch.classes_per_batch}, but the training split has "
                f"{b.num_train_classes} classes; lower it to at most {b.num_train_classes}"
            )
        if len(b.train) <= batch.size:
            raise EifError(
                f"the training split has {len(b.train)} images, too few for one batch of {batch.size} "
                f"(dataset.batch: {batch.classes_per_batch} classes x {batch.samples_per_class} samples)"
            )
        return check

    def fingerprints(self, *splits: str) -> dict[str, str]:
        """Fingerprints of the named splits that exist in this data set."""
        fps = self.data_check.fingerprints
        return {s: fps[s] for s in splits if s in fps}

    def file_digest(self, path: str) -> str:
        digest = file_digest(path, self.cache_dir)
        if not digest:
            raise EifError(f"model.checkpoint: {path} does not exist or cannot be read")
        return digest


@dataclass
class Plan:
    """Every stage a job needs, dependencies first, with its typed settings, spec and store key."""

    stages: list[Stage]
    settings: dict[str, Settings]
    specs: dict[str, dict[str, Any]]
    keys: dict[str, str]


def make_plan(job: JobConfig, env: Env, names: Any = None) -> Plan:
    """Settings and keys of ``names`` (default: the job's stages) and everything they read."""
    stages = closure(job.stages if names is None else names, job)
    settings: dict[str, Settings] = {}
    specs: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    for stage in stages:
        s = stage.settings(job, env)
        spec = {
            "stage": stage.name,
            "version": stage.version,
            "settings": keyed(s),
            "deps": {d: keys[d] for d in stage.dependencies(job)},
        }
        settings[stage.name], specs[stage.name], keys[stage.name] = s, spec, spec_key(spec)
    return Plan(stages, settings, specs, keys)


def check_model(job: JobConfig, bundle: DataBundle, transforms: list[str]) -> None:
    """Build the model (no weight download) and feed it one image of each transform: a wrong channel
    count or an image too small for the trunk is one line here, not a traceback mid-training."""
    problem = job.model.weights_problem()
    if problem:
        raise EifError(problem)
    model = job.model.build(pretrained=False).eval()
    for which in transforms:
        x = bundle.train.with_transform(job.dataset.transforms.build(which))[0][0]
        try:
            with torch.no_grad():
                model(x[None])
        except RuntimeError as err:
            first = " ".join(str(err).split("\n")[0].split())
            raise EifError(
                f"model {job.model.name} (in_channels={job.model.in_channels}) cannot take the "
                f"{job.dataset.name} images under the {which} transform (tensor {tuple(x.shape)}): {first}"
            ) from None


def _writable(directory: Path, what: str) -> None:
    """Fail with one line unless files can be created in ``directory`` (made if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".eif-write-check.", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise EifError(f"{what} {directory} is not writable: {err.strerror or err}") from None


def resolve_progress(setting: bool | None) -> bool:
    """``progress=null``: bars only on an interactive terminal outside SLURM."""
    if setting is not None:
        return setting
    return sys.stderr.isatty() and "SLURM_JOB_ID" not in os.environ


def run_job(cfg: DictConfig | JobConfig) -> dict[str, Any]:
    """Run the job's stages (module doc) of a composed config or a :class:`JobConfig` (validated once,
    by :func:`~eif.config.load_job`); returns the record also written to ``run.json``."""
    job = load_job(cfg)
    check_requirements(job)  # faiss, timm, torchvision: one line now, not after training
    run_dir = Path(job.paths.output_dir)
    print(f"run dir: {run_dir}", flush=True)
    progress = resolve_progress(job.progress)
    device, why = resolve_device(job.device)
    log.info("device: %s (%s)", device, why)
    set_faiss_device(device)  # faiss kNN and k-means on the same GPU (cuda:N), or on the CPU
    store = ArtifactStore(job.paths.store_dir, job.store.stale_after_s, job.store.heartbeat_s)
    cache_dir = Path(job.paths.cache_dir)
    for directory, what in (
        (store.root, "paths.store_dir"),
        (cache_dir, "paths.cache_dir"),
        (run_dir, "the run dir"),
    ):
        _writable(directory, what)
    env = Env(job, cache_dir, progress)
    job = env.job
    plan = make_plan(job, env)
    for stage in plan.stages:
        if stage.check_keys is not None:  # first: a file of another run is named as such
            stage.check_keys(job, plan.keys)
        if stage.check_data is not None:
            stage.check_data(job, env.bundle)
    pending = {
        stage.network(job)
        for stage in plan.stages
        if stage.network is not None
        and not (store.path(stage.name, plan.keys[stage.name]) / "MANIFEST.json").is_file()
    }
    if pending:
        check_model(job, env.bundle, sorted(pending))
    seed_everything(job.seed)
    ident = Job(job.dataset.name, job.model.name, job.loss.name, job.noise.name, job.seed)
    logger: RunLogger = RunLogger()
    exit_code = 1
    try:
        logger = build_logger(job, run_dir)
        run = Run(store, logger, run_dir, device, progress, ident, lambda: env.bundle)
        t0 = time.perf_counter()
        preempt.install()
        with preempt.handle_termination():
            skipped = _run_stages(run, plan, job)
        record = {
            "stages": list(job.stages),
            "keys": dict(plan.keys),
            "artifacts": {n: str(p) for n, p in run.outputs.items()},
            "compute_seconds": run.timings,
            "wall_seconds": time.perf_counter() - t0,
            "device": {"name": str(device), "why": why},
            "job": ident.as_dict(),
            "config": _config_record(cfg, job),
            "resolved": env.resolved,
            "skipped": skipped,
            **provenance(),
        }
        write_json(run_dir / "run.json", record)
        exit_code = 0
        return record
    finally:
        logger.finish(exit_code)


def _run_stages(run: Run, plan: Plan, job: JobConfig) -> dict[str, str]:
    """Run the planned stages; a stage that finds nothing to do (:class:`NothingToExplain`) is noted in
    one line, and the stages reading it are skipped. Returns {skipped stage: why}."""
    skipped: dict[str, str] = {}
    for stage in plan.stages:
        blocked = next((d for d in stage.dependencies(job) if d in skipped), None)
        if blocked is not None:
            skipped[stage.name] = skipped[blocked]
            log.info("stage %s skipped: %s", stage.name, skipped[blocked])
            continue
        try:
            run.execute(stage, plan.settings[stage.name], plan.keys[stage.name], plan.specs[stage.name])
        except NothingToExplain as why:
            skipped[stage.name] = f"{stage.name}: {why}"
            log.info("note: %s", skipped[stage.name])
    return skipped


def _config_record(cfg: DictConfig | JobConfig, job: JobConfig) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dump(job)


def run_job_cli(cfg: DictConfig) -> dict[str, Any]:
    """``run_job`` for the command line: every user-facing failure is one line on stderr."""
    try:
        return run_job(cfg)
    except LockLost as err:
        _fail(str(err), 1)
    except EifError as err:
        _fail(str(err), 2)
    except preempt.Interrupted as err:
        what = "interrupted" if err.signum == 2 else f"terminated ({err})"
        _fail(f"{what}; re-run the same command to resume", 128 + err.signum)
    except KeyboardInterrupt:
        _fail("interrupted; re-run the same command to resume", 130)
    except OSError as err:
        message = disk_error(err)
        if message is None:
            raise
        _fail(message, 1)


def disk_error(err: OSError) -> str | None:
    """One line for a full or read-only disk (or a path we may not write), else None."""
    if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return None
    where = err.filename or "a file"
    return f"cannot write {where}: {os.strerror(err.errno)}"


def _fail(message: str, code: int) -> NoReturn:
    console.error(log, message)
    raise JobExit(code, message)


def plan_keys(cfg: Any, names: Any = None, cache_dir: Path | None = None) -> dict[str, str]:
    """Store keys of ``names`` (default: every registered stage) for a composed config, without
    running anything (used by tests and to inspect where a result lives)."""
    env = Env(load_job(cfg, check_stages=False), cache_dir)
    return make_plan(env.job, env, list(registry()) if names is None else names).keys
