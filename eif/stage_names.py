"""The stage names, importable without torch or any stage module: the command line
checks the requested names with them first, so a typo'd stage is reported in about a second instead
of after the whole pipeline has been imported (:func:`eif.cli.run`)."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable
from pathlib import Path


def _scan() -> tuple[str, ...]:
    """The modules of ``eif/stages/`` that assign ``STAGE`` at top level, found by parsing (no import):
    a new stage is its module there, with no list to extend."""
    found = []
    for path in sorted((Path(__file__).parent / "stages").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        if any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "STAGE" for t in n.targets)
            for n in tree.body
        ):
            found.append(path.stem)
    return tuple(found)


NAMES = _scan()


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
