"""Disjoint class splits shared by the dataset readers.

Train labels become ``0..C-1`` in the order of the configured train classes; test labels keep the
dataset's own class ids (never remapped, so a test label names its class in the dataset).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eif.data.base import ImageSet
from eif.utils.errors import EifError


@dataclass
class Splits:
    """What a dataset reader returns (image sets without transforms, clean labels)."""

    train: ImageSet
    test: ImageSet
    query: ImageSet | None
    gallery: ImageSet | None
    train_class_names: list[str]
    test_class_names: list[str]


def split_by_class(
    images: ImageSet,
    class_names: Sequence[str],
    train_ids: Sequence[int],
    test_ids: Sequence[int],
    dataset: str,
) -> Splits:
    """Split ``images`` (labels = dataset class ids indexing ``class_names``) into disjoint classes."""
    labels = images.labels
    present = np.unique(labels)
    for ids, which in ((train_ids, "train_classes"), (test_ids, "test_classes")):
        if len(ids) == 0:
            raise EifError(f"{dataset}: dataset.{which} is empty")
        if len(set(ids)) != len(ids):
            raise EifError(f"{dataset}: dataset.{which} lists a class more than once")
        missing = np.setdiff1d(np.asarray(ids, dtype=np.int64), present)
        if missing.size:
            shown = ", ".join(str(m) for m in missing[:5]) + (" ..." if missing.size > 5 else "")
            raise EifError(
                f"{dataset}: dataset.{which} has {missing.size} class ids with no images "
                f"in the data ({shown}); the data has ids {present.min()}..{present.max()} "
                f"({present.size} classes)"
            )
    overlap = sorted(set(train_ids) & set(test_ids))
    if overlap:
        raise EifError(
            f"{dataset}: train and test classes overlap in {len(overlap)} classes "
            f"(e.g. {overlap[0]}); metric learning needs disjoint classes"
        )
    train_ids_arr = np.asarray(train_ids, dtype=np.int64)
    lut = np.full(int(present.max()) + 1, -1, dtype=np.int64)
    lut[train_ids_arr] = np.arange(train_ids_arr.size)
    train_index = np.flatnonzero(np.isin(labels, train_ids_arr))
    test_index = np.flatnonzero(np.isin(labels, np.asarray(test_ids, dtype=np.int64)))
    return Splits(
        train=images.subset(train_index, lut[labels[train_index]]),
        test=images.subset(test_index, labels[test_index]),
        query=None,
        gallery=None,
        train_class_names=[class_names[c] for c in train_ids],
        test_class_names=[class_names[c] for c in sorted(test_ids)],
    )
