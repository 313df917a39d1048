"""The wheel holds every module (scripts/check_install.sh installs it for real in CI): a directory
without ``__init__.py`` is silently left out of it by setuptools."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_directory_is_a_package():
    dirs = {p.parent for p in (ROOT / "eif").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(d.relative_to(ROOT)) for d in dirs if not (d / "__init__.py").is_file())
    assert not missing, f"add __init__.py to {missing}: setuptools leaves them out of the wheel"
