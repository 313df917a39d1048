"""Stages, by name: the registry. Every module of this package that assigns ``STAGE`` is a stage
(found by :mod:`eif.stage_names` without importing it); docs/architecture.md, "Stages", says what
adding one takes."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from eif.stage_names import MODULES as FOUND
from eif.stages.base import Stage, unknown_stage

MODULES = tuple(FOUND)  # the stage names, found by eif/stage_names.py without importing any stage


@cache
def registry() -> dict[str, Stage]:
    """Stage name -> :class:`Stage`, every stage after the stages it reads (the pipeline's order)."""
    stages = {n: importlib.import_module(m.module).STAGE for n, m in FOUND.items()}
    return {s.name: s for s in _ordered(stages, stages, None)}


def closure(names: Any, job: Any = None) -> list[Stage]:
    """The stages ``names`` and everything they read, each once, dependencies first.

    Unknown names are one :class:`EifError` line (with a close match when there is one)."""
    return _ordered(registry(), names, job)


def _ordered(reg: dict[str, Stage], names: Any, job: Any) -> list[Stage]:
    """Depth-first over ``deps``: the stages ``names`` of ``reg`` and what they read, dependencies first."""
    order: list[Stage] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        if name not in reg:
            raise unknown_stage(name, reg)
        seen.add(name)
        stage = reg[name]
        for dep in stage.dependencies(job):
            visit(dep)
        order.append(stage)

    for n in names:
        visit(str(n))
    return order
