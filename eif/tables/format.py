"""Number and table formatting shared by every table: the paper's number style, csv + markdown files
(markdown through tabulate, csv cells escaped against spreadsheet formulas by :mod:`eif.utils.csvsafe`)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from eif.utils import csvsafe
from eif.utils.io import write_text


def fmt(value: float | None) -> str:
    """A number in the paper's style (``2.29E-02``); empty for missing values."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2E}"


def markdown(frame: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    """A GitHub-flavoured markdown table; floats formatted with ``floatfmt``, NaN an empty cell, ``|``
    in a cell escaped. The cells are formatted here and handed to tabulate as text (numparse off), so
    every number reads as ``floatfmt`` wrote it."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if v != v else floatfmt.format(v)
        return str(v).replace("|", "\\|")

    rows = [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    head = [str(c).replace("|", "\\|") for c in frame.columns]
    return tabulate(rows, headers=head, tablefmt="github", disable_numparse=True) + "\n"


def write_table(frame: pd.DataFrame, directory: Path, stem: str) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically; returns both paths."""
    csv, md = Path(directory) / f"{stem}.csv", Path(directory) / f"{stem}.md"
    write_text(csv, csvsafe.to_csv(frame))
    write_text(md, markdown(frame))
    return [csv, md]
