"""The stage framework: each stage is a plain function from typed settings and input artifacts to files.

A :class:`Stage` declares

- ``config``: its own config group (e.g. ``("mine", MineConfig)``), validated with the whole job;
- ``settings(job, env)``: the typed settings object of everything its output depends on, picked from
  the validated job config (plus data fingerprints from ``env``). The store key is the hash of these
  settings (minus fields declared unkeyed), the keys of its inputs and ``version``: nothing else
  reaches ``compute``, so nothing else can change its output;
- ``deps``: the stages whose artifacts it reads (a tuple, or a function of the job's settings);
- ``compute(settings, run, out)``: writes its files into ``out``; ``run`` gives the input artifact
  dirs (``run.input(name)``), the data, the device and the logger, never the config;
- ``publish(settings, run, out)``: prints and logs an output, also when it was reused from the store;
- ``check(job)``: cross-setting checks that only matter when the stage runs; ``check_data(job, data)``
  the same against the data set (sizes, classes); ``check_keys(job, keys)`` against the planned store
  keys of every stage (e.g. a file that names the run it belongs to); all before anything is computed;
- ``network(job)``: the transform under which it feeds images through the network, if it does.

:mod:`eif.pipeline` plans a job (validates everything and computes every key) before running any.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eif.logging.run_logger import RunLogger
from eif.settings import Settings
from eif.stage_names import unknown_message
from eif.utils.errors import EifError
from eif.utils.io import read_json
from eif.utils.provenance import provenance
from eif.utils.store import MANIFEST, ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    settings: Callable[[Any, Any], Settings]
    compute: Callable[[Any, Run, Path], None]
    deps: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
    publish: Callable[[Any, Run, Path], None] | None = None
    config: tuple[str, type[Settings]] | None = None
    check: Callable[[Any], None] | None = None
    check_data: Callable[[Any, Any], None] | None = None
    # Checks against the planned store keys ({stage: key}), still before anything is computed.
    check_keys: Callable[[Any, Mapping[str, str]], None] | None = None
    version: int = 1
    # Runs images through the network: the dataset transform it feeds (``train``, ``eval``, ...) as a
    # function of the job; the pipeline test-feeds one image of it before computing. None: it does not.
    network: Callable[[Any], str] | None = None

    def dependencies(self, job: Any) -> tuple[str, ...]:
        """The stages this one reads; ``job`` (a ``JobConfig``) decides optional inputs, None = all."""
        return self.deps(job) if callable(self.deps) else self.deps


@dataclass(frozen=True)
class Job:
    """Who a job is, for tables and logs: names of data set, model, loss and noise, and the seed."""

    dataset: str
    model: str
    loss: str
    noise: str
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "loss": self.loss,
            "noise": self.noise,
            "seed": self.seed,
        }


@dataclass
class Run:
    """What a stage may use besides its settings while a job runs."""

    store: ArtifactStore
    logger: RunLogger
    run_dir: Path
    device: torch.device
    progress: bool
    job: Job
    data_loader: Callable[[], Any]
    outputs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    computed: set[str] = field(default_factory=set)

    def input(self, name: str) -> Path:
        """The artifact dir of stage ``name``, which the running stage declared as a dependency."""
        if name not in self.outputs:
            raise RuntimeError(f"stage output {name!r} is not available (not a declared dependency?)")
        return self.outputs[name]

    def data(self) -> Any:
        """The job's :class:`~eif.data.DataBundle` (read once, shared by its stages)."""
        return self.data_loader()

    def execute(self, stage: Stage, settings: Settings, key: str, spec: dict[str, Any]) -> Path:
        """Compute (or reuse) ``stage``'s output, link it into the run dir, publish it."""
        t0 = time.perf_counter()
        directory, computed = self.store.get_or_compute(
            stage.name,
            key,
            spec,
            lambda out: stage.compute(settings, self, out),
            provenance={**provenance(), "job": self.job.as_dict(), "device": str(self.device)},
        )
        elapsed = time.perf_counter() - t0
        if computed:
            self.timings[stage.name] = elapsed
            self.computed.add(stage.name)
            log.info("stage %s computed in %.1f s -> %s", stage.name, elapsed, directory)
        else:
            created = read_json(directory / MANIFEST).get("created")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "earlier"
            log.info("stage %s: reusing %s (finished %s)", stage.name, directory, when)
        self.outputs[stage.name] = directory
        link_artifacts(directory, self.run_dir / "artifacts" / stage.name)
        if stage.publish is not None:
            stage.publish(settings, self, directory)
        return directory


def link_artifacts(src: Path, dst: Path) -> None:
    """Mirror the files of ``src`` into ``dst`` as hard links (copies across filesystems).

    Built in a private sibling and renamed into place, so a reader never sees a half-linked dir."""
    staging = dst.with_name(f".{dst.name}.link-{uuid.uuid4().hex[:8]}")
    for f in src.rglob("*"):
        if not f.is_file() or f.relative_to(src).parts[0] == "ckpt":
            continue
        target = staging / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
    staging.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(dst, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(staging, dst)


def unknown_stage(name: str, registry: Mapping[str, Stage]) -> EifError:
    return EifError(unknown_message(name, registry))
