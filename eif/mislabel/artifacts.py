"""Reading the upstream artifacts the mislabel stages need (embed, influence), in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eif.utils.errors import EifError, require
from eif.utils.io import read_json


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


def load_group_scores(influence_dir: Path, group: int) -> dict[str, np.ndarray]:
    """Influence scores (N,) of every training sample on confusion group ``group``, per method
    (``eif``, ``if``; positive = harmful). Reads the influence stage's ``group_<method>.npz``
    (``scores`` (G, N), row g = group g of the mine stage)."""
    out = {}
    for method in ("eif", "if"):
        path = Path(influence_dir) / f"group_{method}.npz"
        if not path.is_file():
            continue
        with np.load(path) as z:
            scores = z["scores"]
        if not 0 <= group < scores.shape[0]:
            raise EifError(f"detect.group={group}, but the influence stage scored {scores.shape[0]} groups")
        out[method] = scores[group].astype(np.float64)
    require(
        bool(out),
        f"{influence_dir} holds no group scores: run the influence stage with "
        "influence.kinds including group",
    )
    return out


def detection_seconds(influence_dir: Path) -> dict[str, float]:
    """Wall seconds of scoring the confusion groups, per method, as the influence stage recorded
    them in ``influence.json`` (all groups are scored together, in one batched call per method)."""
    path = Path(influence_dir) / "influence.json"
    if not path.is_file():
        return {}
    return {
        str(e["method"]): float(e["wall_seconds"])
        for e in read_json(path)["analyses"]
        if e["kind"] == "group"
    }
