"""``dataframe``: a data set described by one CSV table in open-metric-learning's (OML) format.

Columns (OML's names; others are ignored):

- ``label``: integer class id; ``path``: the image, relative to ``dataset.root`` (an absolute path is
  used as it is, as in OML); ``split``: ``train`` or ``validation``.
- ``is_query``, ``is_gallery``: booleans on validation rows (ignored, usually empty, on train rows).
- optional ``x_1``, ``x_2``, ``y_1``, ``y_2``: a bounding box in pixels (all four columns or none; a
  row may leave all four empty): the image is cropped to it on load.
- optional ``category``: names classes ``<category>/<label>``; without it a class is named by its label.

A row is an image (its path, and its box when the table has box columns): the same image listed
twice, in one split or in both, is refused with the lines naming it (a repeated validation image is its
own nearest neighbour and inflates Recall@K; one in both splits is a test image seen in training).

Train labels become ``0..C-1`` by sorted label value; validation labels ``C + rank`` of their sorted
values, so they never collide with train labels, even where a label value occurs in both splits (as in
OML's CUB and Cars tables, which keep the official per-image splits). The flags map to eif's splits:
every validation row both query and gallery (OML's CUB, Cars, SOP tables): one pooled test set,
evaluated leave-one-out (each image queries all others); no row both (InShop): query and gallery sets,
Recall@K query -> gallery, and the test set pools query + gallery. docs/data.md has the details.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from eif.data.base import CroppedFileImageSet, FileImageSet
from eif.data.config import DatasetConfig
from eif.data.splits import Splits
from eif.settings import LOCATION, setting
from eif.utils.errors import EifError

log = logging.getLogger(__name__)

COLUMNS = ("label", "path", "split", "is_query", "is_gallery")
BOX_COLUMNS = ("x_1", "y_1", "x_2", "y_2")  # in the order of PIL's crop box
FORMAT = (
    "an OML table with columns label, path, split (train or validation), is_query, is_gallery "
    "and optionally x_1, x_2, y_1, y_2, category"
)
TRUE, FALSE = {"true", "1", "1.0"}, {"false", "0", "0.0"}


class Dataframe(DatasetConfig):
    """An OML table (the module doc). ``csv``: the table, relative to ``root`` (default ``df.csv``,
    OML's name; its converters also write ``df_with_bboxes.csv``) or absolute."""

    csv: str = setting("df.csv", unkeyed=LOCATION)

    def load(self) -> Splits:
        path = Path(self.root) / self.csv
        return split_table(read_table(path), Path(self.root), path)


def read_table(path: Path) -> pd.DataFrame:
    """The CSV as text cells (empty cells NaN), with the required columns present."""
    if not path.is_file():
        raise EifError(f"dataframe: {path} not found; expected {FORMAT} (set dataset.root and dataset.csv)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise EifError(f"dataframe: cannot read {path} as CSV ({' '.join(str(e).split())})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise EifError(f"dataframe: {path} lacks the column(s) {', '.join(missing)}; expected {FORMAT}")
    if table.empty:
        raise EifError(f"dataframe: {path} has no rows")
    return table


def _fail_at(path: Path, bad: pd.Series | np.ndarray, what: str, table: pd.DataFrame, column: str) -> None:
    """Raise naming the first row of ``table`` where ``bad`` (bool, by position) holds, and its
    ``column``; the CSV line is the row's index + 2 (the header is line 1)."""
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i, n = int(np.flatnonzero(bad)[0]), int(bad.sum())
        value = table[column].iloc[i]
        shown = repr("" if pd.isna(value) else value)
        raise EifError(
            f"dataframe: {path} line {int(table.index[i]) + 2}: {what} (got {shown}; "
            f"{n} such row{'s' if n > 1 else ''})"
        )


def _flags(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    text = table[column].fillna("").str.strip().str.lower()
    _fail_at(
        path, ~text.isin(TRUE | FALSE), f"{column} must be True or False on validation rows", table, column
    )
    return text.isin(TRUE).to_numpy()


def _boxes(table: pd.DataFrame, path: Path) -> np.ndarray | None:
    """int64 (N, 4) ``(x1, y1, x2, y2)``, -1 rows for rows without a box; None without box columns."""
    present = [c for c in BOX_COLUMNS if c in table.columns]
    if not present:
        return None
    if len(present) < 4:
        missing = ", ".join(c for c in BOX_COLUMNS if c not in present)
        raise EifError(f"dataframe: {path} has bounding box columns {', '.join(present)} but not {missing}")
    values = {c: pd.Series(pd.to_numeric(table[c], errors="coerce")) for c in BOX_COLUMNS}
    for c in BOX_COLUMNS:
        v = values[c]
        not_whole = (v.isna() & table[c].notna()) | (v.notna() & (v % 1 != 0))
        _fail_at(path, not_whole, f"{c} must be a whole number of pixels", table, c)
        _fail_at(path, v < 0, f"{c} must not be negative", table, c)
    empty = pd.concat([values[c].isna() for c in BOX_COLUMNS], axis=1)
    has = ~empty.all(axis=1)
    _fail_at(path, has & empty.any(axis=1), "a bounding box needs all of x_1, x_2, y_1, y_2", table, "x_1")
    _fail_at(path, has & (values["x_1"] >= values["x_2"]), "x_1 must be smaller than x_2", table, "x_1")
    _fail_at(path, has & (values["y_1"] >= values["y_2"]), "y_1 must be smaller than y_2", table, "y_1")
    boxes = np.stack([values[c].fillna(-1).to_numpy(np.int64) for c in BOX_COLUMNS], axis=1)
    return boxes if has.any() else None


def _names(table: pd.DataFrame, labels: np.ndarray, values: np.ndarray) -> list[str]:
    """``<category>/<label>`` (a label's first category in file order) or the label itself."""
    if "category" not in table.columns:
        return [str(v) for v in values]
    first = pd.Series(table["category"].to_numpy(), index=labels).groupby(level=0).first()
    return [f"{first[v]}/{v}" if v in first.index else str(v) for v in values]


def _refuse_repeated_rows(table: pd.DataFrame, root: Path, path: Path, boxes: np.ndarray | None) -> None:
    """One line naming the first image listed twice (same file, same box), and how many repeat."""
    files = [os.path.normpath(root / p) for p in table["path"].str.strip()]
    ident = (
        pd.Series(files) if boxes is None else pd.Series(files) + "\0" + pd.Series(map(str, boxes.tolist()))
    )
    repeated = ident.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return
    first = int(np.flatnonzero(repeated)[0])
    rows = np.flatnonzero((ident == ident.iloc[first]).to_numpy())  # every row of that image
    lines = [int(table.index[i]) + 2 for i in rows]
    splits = sorted(set(table["split"].str.strip().iloc[rows]))
    extra = int(ident.duplicated().sum())
    raise EifError(
        f"dataframe: {path} lists the image {table['path'].iloc[first]!r} {len(lines)} times (lines "
        f"{', '.join(map(str, lines[:5]))}; {' and '.join(splits)}); {extra} repeated row"
        f"{'s' if extra > 1 else ''} in all: remove them (a repeated image is its own nearest neighbour "
        "and inflates Recall@K; one in both splits is a test image seen in training)"
    )


def split_table(table: pd.DataFrame, root: Path, path: Path) -> Splits:
    """Splits of an OML table (the module doc); ``path`` names the table in errors."""
    for c in ("label", "path", "split"):
        _fail_at(path, table[c].isna().to_numpy(), f"{c} is empty", table, c)
    split = pd.Series(table["split"].str.strip())
    _fail_at(
        path,
        ~split.isin(["train", "validation"]).to_numpy(),
        "split must be train or validation",
        table,
        "split",
    )
    label_text = table["label"].str.strip()
    _fail_at(path, ~label_text.str.fullmatch(r"[+-]?\d+"), "label must be an integer", table, "label")
    labels = label_text.astype(np.int64).to_numpy()
    train, val = (split == "train").to_numpy(), (split == "validation").to_numpy()
    for rows, which in ((train, "train"), (val, "validation")):
        if not rows.any():
            raise EifError(f"dataframe: {path} has no {which} rows; eif needs both splits")
    vt = pd.DataFrame(table.loc[val])
    is_query, is_gallery = _flags(vt, "is_query", path), _flags(vt, "is_gallery", path)
    _fail_at(path, ~is_query & ~is_gallery, "a validation row must be query, gallery or both", vt, "is_query")
    both = is_query & is_gallery
    if both.any() and not both.all():
        raise EifError(
            f"dataframe: {path} marks {int(both.sum())} validation rows as both query and gallery and "
            f"{int((~both).sum())} as only one of them; eif evaluates either every validation row against "
            "all others (all rows both) or queries against a separate gallery (no row both)"
        )
    if "sequence" in table.columns:
        log.warning("dataframe: the sequence column is ignored; same-sequence images count as matches")

    train_values, train_labels = np.unique(labels[train], return_inverse=True)
    test_values, test_rank = np.unique(labels[val], return_inverse=True)
    c = train_values.size
    test_labels = test_rank.astype(np.int64) + c
    shared = np.intersect1d(train_values, test_values)
    if shared.size:
        log.warning(
            "dataframe: %d of the %d validation labels also occur in train (e.g. %d): the test classes are "
            "not new classes; eif gives them test labels of their own",
            shared.size,
            test_values.size,
            shared[0],
        )
    if not both.any():
        missing = np.setdiff1d(test_labels[is_query], test_labels[is_gallery])
        if missing.size:
            raise EifError(
                f"dataframe: {path}: {missing.size} query labels have no gallery image "
                f"(e.g. {test_values[missing[0] - c]}); every query needs its class in the gallery"
            )
    boxes = _boxes(table, path)
    _refuse_repeated_rows(table, root, path, boxes)
    paths = table["path"].tolist()

    def images(rows: np.ndarray, split_labels: np.ndarray) -> FileImageSet:
        chosen = [paths[i] for i in rows]
        if boxes is None:
            return FileImageSet(root, chosen, split_labels)
        return CroppedFileImageSet(root, chosen, split_labels, boxes[rows])

    train_rows, val_rows = np.flatnonzero(train), np.flatnonzero(val)
    names = (_names(table, labels, train_values), _names(table, labels, test_values))
    if both.any():
        query = gallery = None
        test = images(val_rows, test_labels)
    else:
        order = np.concatenate([np.flatnonzero(is_query), np.flatnonzero(is_gallery)])
        n_query = int(is_query.sum())
        query = images(val_rows[order[:n_query]], test_labels[order[:n_query]])
        gallery = images(val_rows[order[n_query:]], test_labels[order[n_query:]])
        test = images(val_rows[order], test_labels[order])
    return Splits(
        train=images(train_rows, train_labels.astype(np.int64)),
        test=test,
        query=query,
        gallery=gallery,
        train_class_names=names[0],
        test_class_names=names[1],
    )
