"""Validation of a review file (``clean.labels``: the review page's ``corrected_labels.csv`` export)
against the run it is applied to, before anything is computed.

The whole file is parsed and checked; every problem is one :class:`EifError` line naming the file:

- the columns ``id``, ``old_label_id``, ``new_label_id``, ``decision`` are present; decisions are
  ``accept``, ``reject``, ``change`` or empty (the row is left alone);
- id columns hold whole numbers, never coerced (``587.7`` is refused, not read as sample 587; ``2.0``
  is 2); every decided row has an ``id`` and an ``old_label_id``, every accept/change row a
  ``new_label_id``;
- ids name training samples of this run (``0..N-1``), each decided once; ``old_label_id`` is the
  run's current label of that sample (else the file comes from another run or noise seed);
  ``new_label_id`` is a training class ``0..C-1``;
- where the optional name columns ``old_label`` / ``new_label`` are filled, they name a class of this
  run and agree with the ids (a ``new_label`` that contradicts ``new_label_id`` is refused). Names are
  compared as written, except that a leading ``'`` before ``=``, ``+``, ``-``, ``@``, tab or CR (the
  CSV-injection escaping of an export) is dropped.

:func:`check_origin` checks the run identity an export records (its store keys and overrides)
against the run at hand's store keys, once they are planned.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from eif.utils.errors import EifError, require

DECISIONS = ("accept", "reject", "change")
COLUMNS = ("id", "old_label_id", "new_label_id", "decision")
ID_COLUMNS = ("id", "old_label_id", "new_label_id")
NAME_COLUMNS = {"old_label": "old_label_id", "new_label": "new_label_id"}
# OWASP's CSV-injection rule: an exported cell that begins with one of these gets a leading quote.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def unescape_cell(cell: str) -> str:
    """A text cell as written before CSV-injection escaping (``'=x`` -> ``=x``); other cells as they are."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell


def _line(table: pd.DataFrame, mask: np.ndarray) -> int:
    """The CSV line of the first row where ``mask`` holds (the header is line 1)."""
    return int(table.index[int(np.flatnonzero(mask)[0])]) + 2


def read_review(path: Path) -> pd.DataFrame:
    """The decided rows of the review file at ``path`` with integer id columns (``Int64``; a reject
    row may leave ``new_label_id`` empty) and lower-case decisions; the checks above that need no run."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EifError(f"clean.labels: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EifError(f"clean.labels: cannot read {path}: {err}") from None
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise EifError(f"clean.labels: {path} is not a CSV file ({str(err).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    require(
        not missing, f"clean.labels: {path} lacks the column(s) {', '.join(missing)} (review page export)"
    )
    for col in (*COLUMNS, *(c for c in NAME_COLUMNS if c in table.columns)):
        table[col] = table[col].str.strip() if col not in NAME_COLUMNS else table[col].map(unescape_cell)
    table["decision"] = table["decision"].str.lower()
    bad = sorted(set(table["decision"]) - {*DECISIONS, ""})
    require(not bad, f"clean.labels: {path} has decision(s) {bad}; use one of {', '.join(DECISIONS)}")
    for col in ID_COLUMNS:
        text_ids = table[col]
        whole = text_ids.str.fullmatch(r"[+-]?\d+(\.0*)?").to_numpy()
        wrong = (text_ids != "").to_numpy() & ~whole
        if wrong.any():
            raise EifError(
                f"clean.labels: {path} line {_line(table, wrong)}: {col} must be a whole number, got "
                f"{text_ids.iloc[int(np.flatnonzero(wrong)[0])]!r} ({int(wrong.sum())} such rows)"
            )
    decided = table.loc[(table["decision"] != "").to_numpy()].copy()
    for col in ("id", "old_label_id"):
        empty = (decided[col] == "").to_numpy()
        if empty.any():
            raise EifError(
                f"clean.labels: {path} line {_line(decided, empty)}: column {col} must hold integers "
                "on every decided row"
            )
    acting = (decided["decision"] != "reject").to_numpy()
    require(
        not (acting & (decided["new_label_id"] == "").to_numpy()).any(),
        f"clean.labels: {path}: every accept/change row needs an integer new_label_id",
    )
    for col in ID_COLUMNS:  # validated above as [+-]digits[.0...]
        values = [None if v == "" else int(v.split(".")[0]) for v in decided[col]]
        decided[col] = pd.array(values, dtype="Int64")
    return decided


def check_review(
    table: pd.DataFrame,
    path: Path,
    labels: np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> None:
    """The checks against the run: ids, current labels, new label ids and class names (module doc).

    ``table``: :func:`read_review`'s rows; ``labels`` int64 (N,): the run's current training labels;
    ``num_classes``: C; ``class_names`` (C,): its training classes (None: names are not checked)."""
    n, c = labels.shape[0], num_classes
    ids = table["id"].to_numpy(np.int64)
    bad = (ids < 0) | (ids >= n)
    if bad.any():
        raise EifError(
            f"clean.labels: {path} line {_line(table, bad)} names training id {ids[bad][0]}, outside "
            f"0..{n - 1}: it belongs to another data set"
        )
    require(len(np.unique(ids)) == len(ids), f"clean.labels: {path} decides some training id twice")
    old = table["old_label_id"].to_numpy(np.int64)
    wrong = np.flatnonzero(labels[ids] != old)
    if wrong.size:
        i = wrong[0]
        raise EifError(
            f"clean.labels: {path} says sample {ids[i]} has label {old[i]}, this run has {labels[ids[i]]} "
            f"({wrong.size} such rows): the file comes from another run or noise seed"
        )
    new = table["new_label_id"]
    out = new.notna().to_numpy() & ((new.fillna(0) < 0) | (new.fillna(0) >= c)).to_numpy()
    if out.any():
        raise EifError(
            f"clean.labels: {path} line {_line(table, out)} has new_label_id outside 0..{c - 1} "
            f"(got {new.iloc[int(np.flatnonzero(out)[0])]})"
        )
    if class_names is not None:
        _check_names(table, path, class_names)


def _check_names(table: pd.DataFrame, path: Path, class_names: Sequence[str]) -> None:
    """Filled ``old_label`` / ``new_label`` cells name a training class and agree with the ids."""
    c = len(class_names)
    for name_col, id_col in NAME_COLUMNS.items():
        if name_col not in table.columns:
            continue
        names, given = table[name_col], table[id_col]
        filled = (names != "").to_numpy() & given.notna().to_numpy()
        unknown = filled & ~names.isin(list(class_names)).to_numpy()
        if unknown.any():
            raise EifError(
                f"clean.labels: {path} line {_line(table, unknown)}: {name_col} "
                f"{names.iloc[int(np.flatnonzero(unknown)[0])]!r} "
                f"is not a training class of this run ({c} classes)"
            )
        expected = np.array([class_names[int(v)] if f else "" for v, f in zip(given.fillna(0), filled)])
        clash = filled & (names.to_numpy() != expected)
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise EifError(
                f"clean.labels: {path} line {_line(table, clash)}: {name_col} {names.iloc[i]!r} contradicts "
                f"{id_col} {int(given.iloc[i])} ({str(expected[i])!r}); fix one of them"
            )


def check_origin(table: pd.DataFrame, path: Path, keys: Mapping[str, str], stage: str = "train") -> None:
    """Refuse a review exported by another run. The review page records the store keys of the run
    that made it (``store_keys``, a JSON object) and that run's Hydra overrides (``overrides``, a JSON
    list) on every row; the suggestions belong to the model of its ``stage`` artifact, so this run's
    ``keys[stage]`` must be the same. The error names the command that runs ``clean`` on the run the
    file came from. Files without these columns (exports from before they were recorded) pass."""
    if "store_keys" not in table.columns or stage not in keys:
        return
    recorded = [c for c in table["store_keys"].dropna().astype(str).unique() if c.strip()]
    if not recorded:
        return
    try:
        theirs = [json.loads(c) for c in recorded]
    except json.JSONDecodeError:
        raise EifError(
            f"clean.labels: {path}: the store_keys column is not the JSON an export writes"
        ) from None
    origin = {k.get(stage) for k in theirs if isinstance(k, dict)}
    require(
        len(origin) == 1, f"clean.labels: {path}: rows come from different runs ({sorted(map(str, origin))})"
    )
    (key,) = origin
    if key is None or key == keys[stage]:
        return
    overrides: list[str] = []
    if "overrides" in table.columns:
        cells = [c for c in table["overrides"].dropna().astype(str).unique() if c.strip()]
        overrides = [str(o) for o in json.loads(cells[0])] if cells else []
    kept = [o for o in overrides if not o.startswith(("stages=", "clean.labels="))]
    command = " ".join(
        ["python launch.py", *map(shlex.quote, kept), "stages=[clean]", f"clean.labels={path}"]
    )
    raise EifError(
        f"clean.labels: {path} was exported by another run (its {stage} artifact is {key}, this run's is "
        f"{keys[stage]}): run clean where it came from: {command}"
    )


def validate_review(
    path: Path, labels: np.ndarray, num_classes: int, class_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """:func:`read_review` and :func:`check_review`: the decided rows, or one-line EifError."""
    table = read_review(path)
    check_review(table, path, labels, num_classes, class_names)
    return table
