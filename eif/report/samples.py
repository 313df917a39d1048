"""The run's samples in the user's terms: class names for training and test labels, the path (or
``index:<i>`` for in-memory data) that finds each image, and which training labels are known flips."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from eif.mislabel.artifacts import TrainSet, load_train
from eif.utils.errors import require
from eif.utils.io import read_json


def sample_ref(paths: list[str] | None, i: int) -> str:
    """Image ``i``'s path relative to the data set root, or ``index:<i>`` for in-memory data."""
    return paths[i] if paths is not None else f"index:{i}"


@dataclass(frozen=True)
class Samples:
    """The embed stage's view of a run: ``train`` (embeddings, noisy and clean labels, flips),
    ``test_labels`` (data-set class ids), class names and image paths of both splits."""

    train: TrainSet
    test_labels: np.ndarray
    train_class_names: list[str]
    test_class_names: list[str]
    train_paths: list[str] | None
    test_paths: list[str] | None

    @cached_property
    def _test_names(self) -> dict[int, str]:
        ids = np.unique(self.test_labels)
        require(
            ids.size == len(self.test_class_names),
            f"embed.json names {len(self.test_class_names)} test classes, test.npz has {ids.size}",
        )
        return dict(zip(ids.tolist(), self.test_class_names))

    @cached_property
    def flipped(self) -> frozenset[int]:
        return frozenset(self.train.flipped.tolist())

    def train_class(self, label: int) -> str:
        """The name of training label ``label`` (0..C-1)."""
        return self.train_class_names[int(label)]

    def test_class(self, label: int) -> str:
        """The name of test label ``label`` (a data-set class id)."""
        return self._test_names[int(label)]

    def train_ref(self, i: int) -> str:
        return sample_ref(self.train_paths, int(i))

    def test_ref(self, i: int) -> str:
        return sample_ref(self.test_paths, int(i))

    def is_flipped(self, i: int) -> bool:
        return int(i) in self.flipped


def load_samples(embed_dir: Path) -> Samples:
    """:class:`Samples` from an embed artifact dir (``train.npz``, ``test.npz``, ``embed.json``)."""
    embed_dir = Path(embed_dir)
    info = read_json(embed_dir / "embed.json")
    with np.load(embed_dir / "test.npz") as z:
        test_labels = z["labels"].astype(np.int64)
    paths = info.get("paths", {})
    return Samples(
        load_train(embed_dir),
        test_labels,
        list(info["train_class_names"]),
        list(info["test_class_names"]),
        paths.get("train"),
        paths.get("test"),
    )
