"""CSV cells that a spreadsheet cannot run (OWASP's CSV-injection rule): a text cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return and is not a number (``-0.5`` stays a number) gets
a leading ``'``, which spreadsheets show as text. Class names and paths come from the user's data,
so ``=HYPERLINK(...)`` as a class name must not become a formula in a table eif writes. The review
page's export applies the same rule in JavaScript (``eif/pages/templates/review.js``); readers of
such files undo it with :func:`unescape_cell`."""

from __future__ import annotations

import pandas as pd

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def escape_cell(value: object) -> object:
    """``value`` with a leading ``'`` when it is a text a spreadsheet would run; anything else as is."""
    if isinstance(value, str) and value.startswith(TRIGGERS) and not _number(value):
        return "'" + value
    return value


def unescape_cell(value: object) -> object:
    """The text :func:`escape_cell` was given (a leading ``'`` before a trigger character removed)."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(TRIGGERS):
        return value[1:]
    return value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names are escaped with :func:`escape_cell`."""
    out = frame.rename(columns=lambda c: escape_cell(str(c)))
    text = [c for c in out.columns if out[c].dtype == object or pd.api.types.is_string_dtype(out[c])]
    for c in text:
        out[c] = out[c].map(escape_cell)
    return out


def to_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text (no index), every text cell and column name escaped."""
    return safe_frame(frame).to_csv(index=False)
