"""Stages, by name. Each module defines ``STAGE``; add new stages to ``_MODULES``."""

from __future__ import annotations

import importlib

from eif.stages.base import Stage

_MODULES = {
    "train": "eif.stages.train",
    "evaluate": "eif.stages.evaluate",
    "embed": "eif.stages.embed",
    "detect": "eif.stages.detect",
    "relabel": "eif.stages.relabel",
    "survey": "eif.stages.survey",
    "report": "eif.stages.report",
}


def registry() -> dict[str, Stage]:
    return {name: importlib.import_module(mod).STAGE for name, mod in _MODULES.items()}
