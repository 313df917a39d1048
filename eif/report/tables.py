"""Tables as csv + markdown files (pandas' ``to_markdown`` needs tabulate, which is not a dependency)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eif.utils.io import write_text


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
