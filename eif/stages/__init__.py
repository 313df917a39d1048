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
    """Stage name -> :class:`Stage`."""
    stages = [importlib.import_module(m.module).STAGE for m in FOUND.values()]
    return {s.name: s for s in stages}


def closure(names: Any, job: Any = None) -> list[Stage]:
    """The stages ``names`` and everything they read, each once, dependencies first.

    Unknown names are one :class:`EifError` line (with a close match when there is one)."""
    reg = registry()
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
