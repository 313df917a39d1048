"""The stage framework: each stage is a plain function from (config, upstream artifacts) to files.

A :class:`Stage` names the stages it reads (``deps``), the config values that affect its output
(``fields``), a ``compute`` function that writes its artifacts into a directory, and an optional
``publish`` function that prints and logs them (run every time, also when the output was cached).
:class:`Context.require` resolves dependencies, computes each output at most once through the
:class:`~eif.utils.store.ArtifactStore`, and links the files into the run's ``artifacts/<stage>/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from eif.logging.run_logger import RunLogger
from eif.utils.errors import EifError
from eif.utils.io import read_json
from eif.utils.provenance import provenance
from eif.utils.store import MANIFEST, ArtifactStore, spec_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    fields: Callable[[DictConfig], dict[str, Any]]
    compute: Callable[[Context, Path], None]
    publish: Callable[[Context, Path], None] | None = None


def plain(node: Any) -> Any:
    """A resolved, JSON-friendly copy of a config node (or the value itself)."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


@dataclass
class Context:
    """Everything a stage needs: config, store, logger, run dir, device, and upstream outputs."""

    cfg: DictConfig
    store: ArtifactStore
    logger: RunLogger
    run_dir: Path
    device: torch.device
    registry: Any  # eif.stages._Registry: name -> Stage, imported lazily
    outputs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _data: Any = None

    def data(self) -> Any:
        """The run's :class:`~eif.data.DataBundle`, read once per job and shared by its stages."""
        if self._data is None:
            from eif.data import build_data

            self._data = build_data(self.cfg)
        return self._data

    def stage(self, name: str) -> Stage:
        if name not in self.registry:
            raise EifError(f"unknown stage {name!r}; known stages: {', '.join(self.registry.names())}")
        return self.registry[name]

    def spec(self, name: str) -> dict[str, Any]:
        st = self.stage(name)
        return {"stage": name, "fields": st.fields(self.cfg), "deps": {d: self.key(d) for d in st.deps}}

    def key(self, name: str) -> str:
        return spec_key(self.spec(name))

    def require(self, name: str) -> Path:
        """The artifact directory of stage ``name``, computing it (and its deps) if needed."""
        if name in self.outputs:
            return self.outputs[name]
        st = self.stage(name)
        for dep in st.deps:
            self.require(dep)
        spec = self.spec(name)
        key = spec_key(spec)
        t0 = time.perf_counter()
        directory, computed = self.store.get_or_compute(
            name,
            key,
            spec,
            lambda d: st.compute(self, d),
            provenance={**provenance(), "config": plain(self.cfg)},
        )
        elapsed = time.perf_counter() - t0
        if computed:
            self.timings[name] = elapsed
            log.info("stage %s computed in %.1f s -> %s", name, elapsed, directory)
        else:
            created = read_json(directory / MANIFEST).get("created")
            log.info(
                "stage %s: reusing %s (finished %s)",
                name,
                directory,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "earlier",
            )
        self.outputs[name] = directory
        link_artifacts(directory, self.run_dir / "artifacts" / name)
        if st.publish is not None:
            st.publish(self, directory)
        return directory


def link_artifacts(src: Path, dst: Path) -> None:
    """Mirror the files of ``src`` into ``dst`` as hard links (copies across filesystems)."""
    if dst.exists():
        shutil.rmtree(dst)
    for f in src.rglob("*"):
        if not f.is_file() or f.relative_to(src).parts[0] == "ckpt":
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
