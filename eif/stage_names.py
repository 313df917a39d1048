"""The stage names, importable without torch or any stage module: the command line
checks the requested names with them first, so a typo'd stage is reported in about a second instead
of after the whole pipeline has been imported (:func:`eif.cli.run`)."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

ENTRY_POINTS = "eif.stages"
"""Entry-point group naming further packages of stages (``name = "package"``), e.g. a plugin's."""


@dataclass(frozen=True)
class StageModule:
    """Where a stage lives: ``module`` (importable name), ``group`` (its config group, from
    ``Stage(config=("<group>", ...))``; None without settings) and ``conf`` (the config dir of its
    package, ``<package>/conf``, when it brings one; eif's own groups are in its ``conf/``)."""

    module: str
    group: str | None
    conf: Path | None


def stage_packages() -> list[str]:
    """``eif.stages`` and the packages the ``eif.stages`` entry points name."""
    return ["eif.stages", *sorted({ep.value for ep in entry_points(group=ENTRY_POINTS)})]


def _stage_call(tree: ast.Module) -> ast.expr | None:
    """The value of a top-level ``STAGE = ...`` assignment, or None."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "STAGE" for t in node.targets):
            return node.value
    return None


def _group(value: ast.expr) -> str | None:
    """``"<group>"`` of ``Stage(..., config=("<group>", Settings))``."""
    for kw in getattr(value, "keywords", []):
        if (
            kw.arg == "config"
            and isinstance(kw.value, ast.Tuple)
            and isinstance(kw.value.elts[0], ast.Constant)
        ):
            return str(kw.value.elts[0].value)
    return None


def scan() -> dict[str, StageModule]:
    """Stage name (its module's name) -> :class:`StageModule`, for every module of the stage packages
    that assigns ``STAGE`` at top level, found by parsing (nothing is imported but the packages'
    parents): a new stage is its module, with no list to extend."""
    found: dict[str, StageModule] = {}
    for package in stage_packages():
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"entry point {ENTRY_POINTS}: package {package!r} is not importable")
        root = Path(next(iter(spec.submodule_search_locations)))
        conf = root / "conf" if package != "eif.stages" and (root / "conf").is_dir() else None
        for path in sorted(root.glob("*.py")):
            value = _stage_call(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            if value is not None:
                found.setdefault(path.stem, StageModule(f"{package}.{path.stem}", _group(value), conf))
    return found


MODULES = scan()
NAMES = tuple(MODULES)


def unknown_message(name: str, known: Iterable[str] = NAMES) -> str:
    """``unknown stage 'evall' (did you mean 'evaluate'?); known stages: ...``."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown stage {name!r}{hint}; known stages: {', '.join(known)}"


def first_unknown(names: object) -> str | None:
    """The message for the first unknown name in a list of stage names, or None (also when ``names``
    is not a list of strings: the full check reports that)."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        return None
    for name in names:  # type: ignore[attr-defined]
        if isinstance(name, str) and name not in NAMES:
            return unknown_message(name)
    return None
