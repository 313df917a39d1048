"""Reading the upstream artifacts the mislabel stages need (embed, influence), in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eif.utils.errors import EifError, require


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
        return TrainSet(z["features"], z["embeddings"], z["labels"].astype(np.int64),
                        z["clean_labels"].astype(np.int64), z["flipped"].astype(np.int64))


def load_group_scores(influence_dir: Path, group: int) -> dict[str, np.ndarray]:
    """Influence scores (N,) of every training sample on confusion group ``group``, per method
    (``eif``, ``if``; positive = harmful). Reads ``influence/<key>/groups.npz``: arrays ``eif`` and
    ``if``, each (G, N), row g = group g of the mine stage."""
    path = Path(influence_dir) / "groups.npz"
    require(path.is_file(), f"{path} is missing: the influence stage wrote no group scores")
    out = {}
    with np.load(path) as z:
        for method in ("eif", "if"):
            if method in z.files:
                scores = z[method]
                if not 0 <= group < scores.shape[0]:
                    raise EifError(f"detect.group={group}, but the influence stage scored "
                                   f"{scores.shape[0]} groups")
                out[method] = scores[group].astype(np.float64)
    require(bool(out), f"{path} holds neither eif nor if scores")
    return out
