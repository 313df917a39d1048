"""Number and table formatting shared by every table: the paper's number style, csv + markdown files
(pandas' ``to_markdown`` needs tabulate, which is not a dependency)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from eif.utils.io import write_text


def fmt(value: float | None) -> str:
    """A number in the paper's style (``2.29E-02``); empty for missing values."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2E}"


def markdown(frame: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    """A GitHub-flavoured markdown table; NaN becomes an empty cell."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "" if v != v else floatfmt.format(v)
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(frame: pd.DataFrame, directory: Path, stem: str) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically; returns both paths."""
    csv, md = Path(directory) / f"{stem}.csv", Path(directory) / f"{stem}.md"
    write_text(csv, frame.to_csv(index=False))
    write_text(md, markdown(frame))
    return [csv, md]
