"""``build_data(cfg)``: the configured dataset's splits, transforms and label noise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from eif.data.base import DataBundle, NoiseInfo
from eif.data.cars import load_cars
from eif.data.fashion_mnist import load_fashion_mnist
from eif.data.folders import load_cub, load_imagefolder
from eif.data.inshop import load_inshop
from eif.data.noise import inject_noise
from eif.data.splits import Splits
from eif.data.transforms import build_transform
from eif.utils.errors import EifError

READERS: dict[str, Callable[[Any], Splits]] = {
    "fashion_mnist": load_fashion_mnist,
    "cub": load_cub,
    "cars": load_cars,
    "inshop": load_inshop,
    "imagefolder": load_imagefolder,
}


def build_data(cfg: Any) -> DataBundle:
    """Read ``cfg.dataset``, give every split the eval transform, inject ``cfg.noise`` with ``cfg.seed``.

    The trainer asks for augmentation with ``bundle.train.with_transform(build_transform(
    cfg.dataset.transforms, "train"))``.
    """
    dcfg = cfg.dataset
    name = str(dcfg.name)
    if name not in READERS:
        raise EifError(f"unknown dataset.name {name!r}; choose one of {', '.join(READERS)}")
    if dcfg.get("root") in (None, "???"):
        raise EifError(f"{name}: set dataset.root to the dataset's directory")
    splits = READERS[name](dcfg)
    for which, part in (("train", splits.train), ("test", splits.test)):
        if len(part) == 0:
            raise EifError(f"{name}: the {which} split has no images")
    eval_t = build_transform(dcfg.transforms, "eval")
    num_classes = len(splits.train_class_names)
    clean = splits.train.clean_labels
    fraction, rule = float(cfg.noise.fraction), str(cfg.noise.rule)
    noisy, flipped = inject_noise(clean, fraction, rule, int(cfg.seed), num_classes)
    return DataBundle(
        train=splits.train.with_labels(noisy).with_transform(eval_t),
        test=splits.test.with_transform(eval_t),
        query=None if splits.query is None else splits.query.with_transform(eval_t),
        gallery=None if splits.gallery is None else splits.gallery.with_transform(eval_t),
        num_train_classes=num_classes,
        train_class_names=splits.train_class_names,
        test_class_names=splits.test_class_names,
        noise=NoiseInfo(fraction, rule, flipped, np.ascontiguousarray(clean[flipped])),
    )
