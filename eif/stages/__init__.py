"""Stages, by name. Each module defines ``STAGE``; add new stages to ``_MODULES``."""

from __future__ import annotations

import importlib

from eif.stages.base import Stage

_MODULES = {
    "train": "eif.stages.train",
    "evaluate": "eif.stages.evaluate",
    "embed": "eif.stages.embed",
    "mine": "eif.stages.mine",
    "influence": "eif.stages.influence",
    "detect": "eif.stages.detect",
    "relabel": "eif.stages.relabel",
    "survey": "eif.stages.survey",
    "report": "eif.stages.report",
    "retrain": "eif.stages.retrain",
    "stats": "eif.stages.stats",
}


class _Registry(dict):
    """Stage name -> :class:`Stage`, importing a stage's module only when it is first needed."""

    def __missing__(self, name: str) -> Stage:
        stage = importlib.import_module(_MODULES[name]).STAGE
        self[name] = stage
        return stage

    def __contains__(self, name: object) -> bool:
        return name in _MODULES

    def names(self) -> list[str]:
        return sorted(_MODULES)


def registry() -> dict[str, Stage]:
    return _Registry()
