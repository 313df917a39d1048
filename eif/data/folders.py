"""Datasets stored as one folder per class: CUB-200-2011 (``root/images``) and ``imagefolder``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BeforeValidator
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from eif.data.base import FileImageSet
from eif.data.config import ClassIds, ClassRange, DatasetConfig, class_ids
from eif.data.splits import Splits, split_by_class
from eif.settings import setting
from eif.utils.errors import EifError

# Folder names given on the command line as numbers (dataset.train_classes=[7,8]) are names too.
FolderName = Annotated[str, BeforeValidator(str)]


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
    paths = [Path(p).relative_to(directory).as_posix() for p, _ in samples]
    labels = np.fromiter((c for _, c in samples), dtype=np.int64, count=len(samples))
    return FileImageSet(directory, paths, labels), names


def require_images(images: FileImageSet, names: list[str], ids: list[int], dataset: str) -> None:
    """One line naming the class folders among ``ids`` (indices into ``names``) that hold no image."""
    empty = sorted(set(ids) - set(np.unique(images.labels).tolist()))
    if empty:
        shown = ", ".join(repr(names[c]) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise EifError(
            f"{dataset}: {len(empty)} class folder{'s' if len(empty) > 1 else ''} under {images.root} "
            f"hold{'' if len(empty) > 1 else 's'} no images ({shown}); add images or leave the class out"
        )


class Cub(DatasetConfig):
    """CUB-200-2011: labels are the sorted folder indices 0..199 of ``root/images`` (ImageFolder order)."""

    train_classes: ClassIds = ClassRange(start=0, stop=100)
    test_classes: ClassIds = ClassRange(start=100, stop=200)

    def load(self) -> Splits:
        images, names = scan_folders(
            Path(self.root) / "images", "cub", "root/images/NNN.Name/*.jpg (CUB_200_2011)"
        )
        train_ids, test_ids = class_ids(self.train_classes), class_ids(self.test_classes)
        require_images(images, names, [c for c in (*train_ids, *test_ids) if 0 <= c < len(names)], "cub")
        return split_by_class(images, names, train_ids, test_ids, "cub")


def _names_to_ids(spec: tuple[str, ...], class_to_idx: dict[str, int], which: str) -> list[int]:
    unknown = [str(n) for n in spec if str(n) not in class_to_idx]
    if unknown:
        raise EifError(
            f"imagefolder: dataset.{which} names {len(unknown)} folders not in the data "
            f"(e.g. {unknown[0]!r}); the data has {len(class_to_idx)} class folders"
        )
    return [class_to_idx[str(n)] for n in spec]


class ImageFolder(DatasetConfig):
    """``root/<class>/<image>``: classes are the sorted folder names. ``train_classes`` /
    ``test_classes`` list folder names (one list given: the other split gets the remaining classes);
    with neither, train gets the first ``train_fraction`` of the sorted classes and test the rest."""

    train_classes: tuple[FolderName, ...] | None = None
    test_classes: tuple[FolderName, ...] | None = None
    train_fraction: float = setting(0.5, gt=0, lt=1)

    def load(self) -> Splits:
        root = Path(self.root)
        images, names = scan_folders(root, "imagefolder", "root/<class>/<image> (one folder per class)")
        class_to_idx = {n: i for i, n in enumerate(names)}
        train_spec, test_spec = self.train_classes, self.test_classes
        if train_spec is None and test_spec is None:
            n_train = math.floor(self.train_fraction * len(names) + 0.5)
            if not 0 < n_train < len(names):
                raise EifError(
                    f"imagefolder: train_fraction={self.train_fraction} of {len(names)} classes leaves an "
                    "empty train or test split"
                )
            train_ids, test_ids = list(range(n_train)), list(range(n_train, len(names)))
        elif train_spec is None:  # one list given: the other split gets every remaining class
            test_ids = _names_to_ids(test_spec or (), class_to_idx, "test_classes")
            train_ids = [c for c in range(len(names)) if c not in set(test_ids)]
        else:
            train_ids = _names_to_ids(train_spec, class_to_idx, "train_classes")
            test_ids = (
                _names_to_ids(test_spec, class_to_idx, "test_classes")
                if test_spec is not None
                else [c for c in range(len(names)) if c not in set(train_ids)]
            )
        require_images(images, names, [*train_ids, *test_ids], "imagefolder")
        return split_by_class(images, names, train_ids, test_ids, "imagefolder")
