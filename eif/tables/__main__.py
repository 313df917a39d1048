"""``python -m eif.tables <sweep_dir>``: rebuild every table that the sweep's jobs have results for
(e.g. while a sweep is still running, or after it was interrupted)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from eif.tables import clean, lds, mislabel, table1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eif.tables", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    sweep: Path = args.sweep_dir
    if not sweep.is_dir():
        print(f"error: {sweep} is not a directory", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = []
    if (
        any(sweep.glob("*/stats.json"))
        or (sweep / "multirun.yaml").is_file()
        and not any(sweep.glob("*/artifacts/relabel/relabel.json"))
        and not any(sweep.glob("*/artifacts/lds/lds.json"))
        and not any(sweep.glob("*/artifacts/clean/clean.json"))
    ):
        table1.aggregate(sweep)
        written.append(sweep / "table1.md")
    if any(sweep.glob("*/artifacts/lds/lds.json")):
        lds.aggregate(sweep)
        written.append(sweep / "lds.md")
    if any(sweep.glob("*/artifacts/clean/clean.json")):
        clean.aggregate(sweep)
        written.append(sweep / "clean.md")
    if any(sweep.glob("*/artifacts/relabel/relabel.json")):
        mislabel.aggregate(sweep)
        written += [sweep / "table2.md", sweep / "table3.md", sweep / "index.html"]
    if not written:
        found = "*/stats.json or */artifacts/{relabel,lds,clean}/*.json"
        print(f"error: {sweep} holds no job results (no {found})", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
