"""Stage ``retrain_features``: the trunk features of the re-training epoch(s) under the train transform.

Re-training changes only the head, with the trunk frozen in eval mode, the original seed and the
same class-balanced batches and augmentations for every re-training; one pass over those batches
therefore gives the head's exact inputs for all of them. Artifact: ``epoch.npz``
(:class:`eif.retrain.head.EpochBatches`) and ``features.json`` (counts, seconds). Read by
``retrain`` (``retrain.features=augmented``), shared by every re-training setting of one model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import NonNegativeInt, PositiveInt

from eif.data.config import BatchConfig
from eif.data.transforms import Geometric, Normalization, compose
from eif.retrain.features import augmented_epoch, epoch_batches
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.training.trained import load_trained
from eif.utils.io import save_npz, write_json

log = logging.getLogger(__name__)


class RetrainFeaturesSettings(Settings):
    """What fixes the re-training batches and their augmentations (besides the trained model)."""

    data: str
    seed: int
    epochs: PositiveInt
    batch: BatchConfig
    normalization: Normalization
    augment: Geometric
    num_workers: NonNegativeInt = setting(0, unkeyed=SPEED)


def _settings(job: Any, env: Any) -> RetrainFeaturesSettings:
    return RetrainFeaturesSettings(
        data=env.fingerprints("train")["train"],
        seed=job.seed,
        epochs=job.retrain.epochs,
        batch=job.dataset.batch,
        normalization=job.dataset.transforms.normalization,
        augment=job.dataset.transforms.train,
        num_workers=job.retrain.num_workers,
    )


def _compute(s: RetrainFeaturesSettings, run: Run, out: Path) -> None:
    model, _, _ = load_trained(run.input("train"), run.device)
    data = run.data()
    train_set = data.train.with_transform(compose(s.normalization, s.augment))
    t0 = time.perf_counter()
    batches = epoch_batches(np.asarray(data.train.labels), s.batch, s.seed, s.epochs)
    workers = s.num_workers if run.device.type == "cuda" else 0  # on a CPU the cores compute the trunk
    epoch = augmented_epoch(model.features, train_set, batches, run.device, num_workers=workers)
    save_npz(out / "epoch.npz", **epoch.arrays())
    write_json(
        out / "features.json",
        {
            "samples": int(len(epoch.indices)),
            "batches": epoch.num_batches,
            "seconds": time.perf_counter() - t0,
        },
    )


STAGE = Stage(
    name="retrain_features",
    settings=_settings,
    compute=_compute,
    deps=("train",),
    network=lambda job: "train",
)
