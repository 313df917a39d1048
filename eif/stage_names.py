"""The stage names in pipeline order, importable without torch or any stage module: the command line
checks the requested names with them first, so a typo'd stage is reported in about a second instead
of after the whole pipeline has been imported (:func:`eif.cli.run`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

NAMES = (
    "train",
    "evaluate",
    "embed",
    "mine",
    "influence",
    "retrain_features",
    "retrain",
    "stats",
    "detect",
    "relabel",
    "survey",
    "report",
    "lds",
    "clean",
)


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
