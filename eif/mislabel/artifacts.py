"""The cached training set as the mislabel stages read it from the embed stage (influence results are read
with :class:`eif.influence.artifacts.Influence`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eif.utils.errors import require


@dataclass(frozen=True)
class TrainSet:
    """Cached training set: ``features`` (N, D), ``embeddings`` (N, E) raw head outputs, ``labels``
    (N,) the (noisy) labels training saw, ``clean_labels`` (N,), ``flipped`` (M,) mislabelled indices."""

    features: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    clean_labels: np.ndarray
    flipped: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.labels.max(), self.clean_labels.max())) + 1


def load_train(embed_dir: Path) -> TrainSet:
    path = Path(embed_dir) / "train.npz"
    require(path.is_file(), f"{path} is missing: run the embed stage first")
    with np.load(path) as z:
        return TrainSet(
            z["features"],
            z["embeddings"],
            z["labels"].astype(np.int64),
            z["clean_labels"].astype(np.int64),
            z["flipped"].astype(np.int64),
        )
