"""Datasets stored as one folder per class: CUB-200-2011 (``root/images``) and ``imagefolder``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from eif.data.base import FileImageSet
from eif.data.splits import Splits, class_ids, split_by_class
from eif.utils.errors import EifError


def _is_image(path: str) -> bool:
    # Skip macOS AppleDouble files ("._x.jpg"), as the reference's CUB loader does.
    return not Path(path).name.startswith("._") and path.lower().endswith(IMG_EXTENSIONS)


def scan_folders(directory: Path, dataset: str, layout: str) -> tuple[FileImageSet, list[str]]:
    """All images of ``directory/<class>/<image>``; labels = index of the class in sorted order."""
    if not directory.is_dir():
        raise EifError(f"{dataset}: data not found: {directory} is not a directory; expected {layout}")
    try:
        names, class_to_idx = find_classes(str(directory))
        samples = make_dataset(str(directory), class_to_idx, is_valid_file=_is_image, allow_empty=True)
    except FileNotFoundError as e:
        raise EifError(f"{dataset}: {' '.join(str(e).split())} (expected {layout})") from None
    if not samples:
        raise EifError(f"{dataset}: no images under {directory}; expected {layout}")
    paths = [p for p, _ in samples]
    labels = np.fromiter((c for _, c in samples), dtype=np.int64, count=len(samples))
    return FileImageSet(paths, labels), names


def load_cub(dcfg: Any) -> Splits:
    """CUB-200-2011: labels are the sorted folder indices 0..199 (torchvision ImageFolder order)."""
    root = Path(str(dcfg.root))
    images, names = scan_folders(root / "images", "cub", "root/images/NNN.Name/*.jpg (CUB-200-2011)")
    return split_by_class(
        images,
        names,
        class_ids(dcfg.train_classes, "train_classes"),
        class_ids(dcfg.test_classes, "test_classes"),
        "cub",
    )


def _names_to_ids(spec: Any, class_to_idx: dict[str, int], which: str) -> list[int]:
    if isinstance(spec, str):
        raise EifError(f"imagefolder: dataset.{which} must be a list of folder names, got {spec!r}")
    unknown = [str(n) for n in spec if str(n) not in class_to_idx]
    if unknown:
        raise EifError(
            f"imagefolder: dataset.{which} names {len(unknown)} folders not in the data "
            f"(e.g. {unknown[0]!r}); the data has {len(class_to_idx)} class folders"
        )
    return [class_to_idx[str(n)] for n in spec]


def load_imagefolder(dcfg: Any) -> Splits:
    """``root/<class>/<image>``: classes by folder-name lists, or the first ``train_fraction`` for train."""
    root = Path(str(dcfg.root))
    images, names = scan_folders(root, "imagefolder", "root/<class>/<image> (one folder per class)")
    class_to_idx = {n: i for i, n in enumerate(names)}
    train_spec, test_spec = dcfg.get("train_classes"), dcfg.get("test_classes")
    if train_spec is None and test_spec is None:
        frac = float(dcfg.get("train_fraction", 0.5))
        n_train = math.floor(frac * len(names) + 0.5)
        if not 0 < n_train < len(names):
            raise EifError(
                f"imagefolder: train_fraction={frac} of {len(names)} classes leaves an empty "
                "train or test split"
            )
        train_ids, test_ids = list(range(n_train)), list(range(n_train, len(names)))
    else:
        # One list given: the other split gets every remaining class.
        if train_spec is None:
            test_ids = _names_to_ids(test_spec, class_to_idx, "test_classes")
            train_ids = [c for c in range(len(names)) if c not in set(test_ids)]
        else:
            train_ids = _names_to_ids(train_spec, class_to_idx, "train_classes")
            test_ids = (
                _names_to_ids(test_spec, class_to_idx, "test_classes")
                if test_spec is not None
                else [c for c in range(len(names)) if c not in set(train_ids)]
            )
    return split_by_class(images, names, train_ids, test_ids, "imagefolder")
