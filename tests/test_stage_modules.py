"""Stages are thin: no stage module imports another stage module (library code lives in packages), and
every stage module is found without a hand-written list."""

from __future__ import annotations

import ast
from pathlib import Path

from eif.stage_names import MODULES, NAMES
from eif.stages import registry

STAGES = Path(__file__).resolve().parents[1] / "eif" / "stages"


def _imports(path: Path) -> set[str]:
    """Every module an ``import``/``from ... import`` statement anywhere in ``path`` names (also the
    ``from pkg import mod`` form, as ``pkg.mod``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_no_stage_module_imports_another() -> None:
    stage_modules = {f"eif.stages.{n}" for n in NAMES}
    offenders = {
        name: sorted((_imports(STAGES / f"{name}.py") & stage_modules) - {f"eif.stages.{name}"})
        for name in NAMES
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # the scan sees every stage; the only other modules of the package are the framework (registry, Stage)
    assert {f"eif.stages.{p.stem}" for p in STAGES.glob("*.py")} - stage_modules == {
        "eif.stages.__init__",
        "eif.stages.base",
    }


def test_scanned_names_are_the_registry() -> None:
    assert sorted(registry()) == sorted(NAMES)
    # the config groups Hydra composes (hydra_plugins/eif_stages) are the ones the stages declare
    assert {n: m.group for n, m in MODULES.items()} == {
        n: s.config[0] if s.config else None for n, s in registry().items()
    }
    assert {n for n, s in registry().items() if s.network is not None} == {
        "train",
        "evaluate",
        "embed",
        "retrain_features",
    }
