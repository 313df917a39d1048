"""Reading the configured data set: its splits, the eval transform, and label noise."""

from __future__ import annotations

from typing import Any

import numpy as np

from eif.data.base import DataBundle, NoiseInfo
from eif.data.config import DatasetConfig
from eif.data.noise import NoiseConfig, inject_noise
from eif.data.splits import Splits
from eif.settings import parse
from eif.utils.errors import EifError


def load_data(
    dataset: DatasetConfig, noise: NoiseConfig, seed: int, splits: Splits | None = None
) -> DataBundle:
    """Read ``dataset`` (or take its ``splits``, already read), give every split the eval transform,
    inject ``noise`` with ``seed``.

    The trainer asks for augmentation with ``bundle.train.with_transform(dataset.transforms.build("train"))``.
    """
    splits = dataset.load() if splits is None else splits
    for which, part in (("train", splits.train), ("test", splits.test)):
        if len(part) == 0:
            raise EifError(f"{dataset.name}: the {which} split has no images")
    eval_t = dataset.transforms.build("eval")
    num_classes = len(splits.train_class_names)
    clean = splits.train.clean_labels
    noisy, flipped = inject_noise(clean, noise.fraction, noise.rule, seed, num_classes)
    return DataBundle(
        train=splits.train.with_labels(noisy).with_transform(eval_t),
        test=splits.test.with_transform(eval_t),
        query=None if splits.query is None else splits.query.with_transform(eval_t),
        gallery=None if splits.gallery is None else splits.gallery.with_transform(eval_t),
        num_train_classes=num_classes,
        train_class_names=splits.train_class_names,
        test_class_names=splits.test_class_names,
        noise=NoiseInfo(noise.fraction, noise.rule, flipped, np.ascontiguousarray(clean[flipped])),
    )


def build_data(cfg: Any) -> DataBundle:
    """:func:`load_data` from a composed config (``dataset``, ``noise``, ``seed`` nodes)."""
    return load_data(
        parse(DatasetConfig, cfg.dataset, "dataset"), parse(NoiseConfig, cfg.noise, "noise"), int(cfg.seed)
    )
