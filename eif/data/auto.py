"""Settings left ``auto``, picked from the data when a job runs.

Hydra composes the config before eif reads any data, so ``auto`` stays a plain value through
:func:`eif.config.load_job`. :class:`eif.pipeline.Env` reads the data set and calls
:func:`eif.resolve_auto.resolve_job`, which replaces every ``auto`` by the value this module picks
from the data. Stage settings, and so store keys, are built from the resolved job only: an ``auto``
setting is keyed by the value it resolved to (``auto`` and that value written out give the same key),
and the value itself follows the data, whose fingerprint is keyed too. The resolved values are logged
and recorded in ``run.json`` (``resolved``).

What ``auto`` picks (docs/data.md, "Image folders"; docs/models.md):

- ``dataset.transforms``: with a pretrained model (ImageNet weights) every ``auto`` is the ImageNet
  preset (``conf/dataset/transforms/imagenet.yaml``). Otherwise ``to_rgb`` is false when every image
  is grayscale (1 channel) and true else (3); ``mean``/``std`` are the per-channel pixel statistics
  of up to :data:`STAT_IMAGES` training images; when every image has the same size with sides in
  [:data:`MIN_SIZE`, :data:`MAX_SIZE`], ``eval`` and ``influence`` keep it (``none``) and ``train``
  is a random resized crop of the short side; else the size S is the median short side clipped to
  that range: ``train`` a random resized crop to S, ``eval`` resize + centre crop to S, ``influence``
  resize to S (no crop, as the reference).
- ``dataset.batch``: ``classes_per_batch`` = min(8, training classes); ``samples_per_class`` = the
  median class size // 4, clipped to [2, 8]; both lowered while one batch would hold every image.
- ``model.in_channels``: the channels the transforms give (feature vectors: their size D);
  ``model.feature_dim``: the trunk's output size (:meth:`eif.models.config.ModelConfig.resolve`).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

import numpy as np
from omegaconf import OmegaConf

from eif.data.base import ArrayImageSet, CroppedFileImageSet, FileImageSet, ImageSet, crop_box
from eif.data.config import BatchConfig
from eif.data.fingerprint import MODE_CHANNELS, FileIndex
from eif.data.splits import Splits
from eif.data.transforms import TransformsConfig
from eif.settings import AUTO, config_dir, parse
from eif.utils.errors import EifError

MIN_SIZE, MAX_SIZE = 8, 128  # pixels: the smallest the small CNN takes, the largest picked for CPU runs
STAT_IMAGES = 500  # training images (evenly spaced) whose pixels give mean and std
SCALE = (0.6, 1.0)  # random resized crop scale for small images (as Fashion-MNIST's config)


class DataAccess(Protocol):
    """What resolving reads: the raw splits, the per-file image index, file digests."""

    @property
    def splits(self) -> Splits: ...

    @property
    def progress(self) -> bool: ...

    def file_index(self, images: FileImageSet) -> FileIndex: ...

    def file_digest(self, path: str) -> str: ...


@cache
def imagenet_preset() -> TransformsConfig:
    """``conf/dataset/transforms/imagenet.yaml``: the reference's transforms for ImageNet weights."""
    node = OmegaConf.load(config_dir() / "dataset" / "transforms" / "imagenet.yaml")
    return parse(TransformsConfig, node, "dataset.transforms")


def _scan(images: ImageSet, data: DataAccess) -> tuple[list[str], list[tuple[int, int]], list[int]]:
    """PIL modes and sizes (w, h, crop boxes applied) of the usable images, and their indices."""
    if isinstance(images, ArrayImageSet):
        h, w = images.images.shape[1:3]
        mode = "L" if images.images.ndim == 3 else "RGB"
        return [mode] * len(images), [(int(w), int(h))] * len(images), list(range(len(images)))
    if not isinstance(images, FileImageSet):
        raise EifError(f"auto settings cannot read {type(images).__name__}; set dataset.transforms")
    paths = images.paths
    assert paths is not None  # a FileImageSet always names its files
    infos = data.file_index(images).lookup(paths, progress=data.progress)
    boxes = images.boxes if isinstance(images, CroppedFileImageSet) else None
    modes, sizes, usable = [], [], []
    for i, info in enumerate(infos):
        size = info.size
        if boxes is not None and boxes[i, 0] >= 0:
            box = crop_box(boxes[i], size)
            size = (box[2] - box[0], box[3] - box[1]) if box is not None else (0, 0)
        if info.error or 0 in size:  # the image checks report it
            continue
        modes.append(info.mode)
        sizes.append(size)
        usable.append(i)
    return modes, sizes, usable


def resolve_transforms(
    tf: TransformsConfig, pretrained: bool, splits: Splits, data: DataAccess
) -> TransformsConfig:
    """``tf`` with its ``auto`` settings picked (module doc): the ImageNet preset for a pretrained model,
    else from the images of ``splits``."""
    fields = {name: getattr(tf, name) for name in TransformsConfig.model_fields}
    auto = [name for name, value in fields.items() if value == AUTO]
    if pretrained:
        preset = imagenet_preset()
        return parse(
            TransformsConfig, {**fields, **{n: getattr(preset, n) for n in auto}}, "dataset.transforms"
        )
    train = _scan(splits.train, data)
    test = _scan(splits.test, data)
    if not train[2]:
        raise EifError("auto transforms: no training image can be read (the image checks list why)")
    gray = all(MODE_CHANNELS.get(m) == 1 for m in train[0] + test[0])
    if fields["to_rgb"] is True:
        channels = 3
    elif fields["to_rgb"] is False and fields["mean"] != AUTO:
        channels = len(fields["mean"])
    else:
        channels = 1 if gray else 3
    if fields["to_rgb"] == AUTO:
        fields["to_rgb"] = channels == 3
    if AUTO in (fields["mean"], fields["std"]):
        mean, std = pixel_stats(splits.train, train[2], channels)
        fields["mean"] = mean if fields["mean"] == AUTO else fields["mean"]
        fields["std"] = std if fields["std"] == AUTO else fields["std"]
    steps = geometry(train[1] + test[1])
    for which in ("train", "eval", "influence"):
        if fields[which] == AUTO:
            fields[which] = steps[which]
    return parse(TransformsConfig, fields, "dataset.transforms")


def pixel_stats(images: ImageSet, usable: list[int], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the pixels (in [0, 1]) of up to :data:`STAT_IMAGES` evenly spaced
    usable images, as ``channels``-channel images; rounded to 4 decimals."""
    pick = np.unique(np.linspace(0, len(usable) - 1, min(len(usable), STAT_IMAGES)).round().astype(int))
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for k in pick:
        image = images.load(usable[k]).convert("L" if channels == 1 else "RGB")
        pixels = np.asarray(image, dtype=np.float64).reshape(-1, channels) / 255.0
        total += pixels.sum(0)
        squares += (pixels**2).sum(0)
        count += pixels.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return [round(float(m), 4) for m in mean], [max(round(float(s), 4), 1e-3) for s in std]


def geometry(sizes: list[tuple[int, int]]) -> dict[str, dict[str, Any]]:
    """The ``train``, ``eval`` and ``influence`` steps for images of ``sizes`` (w, h) (module doc)."""
    if len(set(sizes)) == 1 and min(sizes[0]) >= MIN_SIZE and max(sizes[0]) <= MAX_SIZE:
        side = min(sizes[0])
        crop = {"name": "random_resized_crop", "size": side, "scale": SCALE, "flip": True}
        return {"train": crop, "eval": {"name": "none"}, "influence": {"name": "none"}}
    side = int(np.clip(np.median([min(s) for s in sizes]), MIN_SIZE, MAX_SIZE))
    return {
        "train": {"name": "random_resized_crop", "size": side, "scale": SCALE, "flip": True},
        "eval": {"name": "resize_center_crop", "resize": side, "crop": side},
        "influence": {"name": "resize", "resize": side},
    }


def batch_for(batch: BatchConfig, labels: np.ndarray) -> BatchConfig:
    """``batch`` with ``auto`` picked from the training ``labels`` (module doc)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    counts = counts[counts > 0]
    n = int(counts.sum())
    cpb, spc = batch.classes_per_batch, batch.samples_per_class
    if cpb == AUTO:
        if counts.size < 2:
            raise EifError(
                f"dataset.batch.classes_per_batch=auto: the training split has {counts.size} class; "
                "class-balanced batches need at least 2"
            )
        cpb = min(8, int(counts.size))
    if spc == AUTO:
        spc = int(np.clip(np.median(counts) // 4, 2, 8))
        while spc > 1 and cpb * spc >= n:
            spc -= 1
    while batch.classes_per_batch == AUTO and cpb > 2 and cpb * spc >= n:
        cpb -= 1
    return BatchConfig(classes_per_batch=cpb, samples_per_class=spc)
