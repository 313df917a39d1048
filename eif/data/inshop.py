"""In-Shop Clothes Retrieval from ``Eval/list_eval_partition.txt``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eif.data.base import FileImageSet
from eif.data.config import DatasetConfig
from eif.data.splits import Splits
from eif.utils.errors import EifError

LAYOUT = (
    "root/Eval/list_eval_partition.txt (line 1: row count, line 2: header, then rows "
    "'img/... id_XXXXXXXX train|query|gallery') and root/img/"
)
STATUSES = ("train", "query", "gallery")


def read_partition(path: Path) -> pd.DataFrame:
    """The partition table: columns ``image_name``, ``item_id``, ``evaluation_status``, ``item``."""
    if not path.is_file():
        raise EifError(f"inshop: {path} not found; expected {LAYOUT}")
    with open(path) as fh:
        first = fh.readline().strip()
    if not first.isdigit():
        raise EifError(f"inshop: {path} line 1 should be the row count, got {first[:40]!r}")
    table = pd.read_csv(
        path,
        sep=r"\s+",
        skiprows=2,
        header=None,
        dtype=str,
        names=["image_name", "item_id", "evaluation_status"],
    )
    if len(table) != int(first) or table.isna().any().any():
        raise EifError(f"inshop: {path} announces {int(first)} rows but has {len(table)} complete rows")
    bad = sorted(set(table.evaluation_status) - set(STATUSES))
    if bad:
        raise EifError(f"inshop: {path} has unknown status {bad[0]!r}; expected train, query or gallery")
    try:
        table["item"] = table.item_id.str.split("_").str[1].astype(np.int64)
    except (ValueError, TypeError):
        raise EifError(f"inshop: {path} has item ids not of the form id_XXXXXXXX") from None
    return table


class InShop(DatasetConfig):
    """In-Shop Clothes Retrieval: train items remapped by sorted id to ``0..C-1``; query and gallery
    items to ``C + rank`` (shared); the test split pools query + gallery."""

    def load(self) -> Splits:
        return _load(Path(self.root))


def _load(root: Path) -> Splits:
    table = read_partition(root / "Eval" / "list_eval_partition.txt")
    part = {s: table[table.evaluation_status == s] for s in STATUSES}
    for s, rows in part.items():
        if rows.empty:
            raise EifError(f"inshop: the {s} split is empty in {root / 'Eval' / 'list_eval_partition.txt'}")
    train_items, train_labels = np.unique(part["train"]["item"].to_numpy(), return_inverse=True)
    test_rows = pd.concat([part["query"], part["gallery"]])
    test_items, test_labels = np.unique(test_rows["item"].to_numpy(), return_inverse=True)
    overlap = np.intersect1d(train_items, test_items)
    if overlap.size:
        raise EifError(
            f"inshop: {overlap.size} item ids are in both train and query/gallery "
            f"(e.g. id_{overlap[0]:08d}); metric learning needs disjoint classes"
        )
    c = train_items.size
    test_labels = test_labels.astype(np.int64) + c
    n_query = len(part["query"])
    id_name = dict(zip(table.item.tolist(), table.item_id.tolist()))
    paths = [str(p) for p in test_rows.image_name]
    train_paths = [str(p) for p in part["train"].image_name]
    return Splits(
        train=FileImageSet(root, train_paths, train_labels.astype(np.int64)),
        test=FileImageSet(root, paths, test_labels),
        query=FileImageSet(root, paths[:n_query], test_labels[:n_query]),
        gallery=FileImageSet(root, paths[n_query:], test_labels[n_query:]),
        train_class_names=[id_name[i] for i in train_items],
        test_class_names=[id_name[i] for i in test_items],
    )
