"""Image sets and the bundle of splits that :func:`eif.data.build.build_data` returns.

An :class:`ImageSet` holds images (in memory or as file paths), the labels training sees (noisy
where noise was injected) and the clean labels. Indexing with ``i`` gives ``(image, label, i)``;
indexing with ``(i, seed)`` applies the transform under a private torch RNG seeded with ``seed``,
so a random augmentation is a pure function of ``seed`` (resume mid-epoch, re-train on the very
same augmented batches).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eif.utils.errors import EifError

Transform = Callable[[Image.Image], torch.Tensor]


class ImageSet(torch.utils.data.Dataset):
    """A labelled image set; subclasses define ``__len__`` and :meth:`load`.

    ``labels``: int64 (N,), the labels training sees (noisy where noise was injected).
    ``clean_labels``: int64 (N,), the true labels. ``paths``: image paths, or ``None`` in memory.
    """

    paths: list[str] | None = None

    def __init__(
        self, labels: np.ndarray, transform: Transform | None = None, clean_labels: np.ndarray | None = None
    ) -> None:
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.clean_labels = (
            self.labels.copy() if clean_labels is None else np.ascontiguousarray(clean_labels, dtype=np.int64)
        )
        if self.labels.shape != self.clean_labels.shape or self.labels.ndim != 1:
            raise ValueError(
                f"labels {self.labels.shape} and clean_labels {self.clean_labels.shape} "
                "must be equal 1-d shapes"
            )
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, i: int) -> Image.Image:
        """The raw image ``i`` as stored (mode ``L``, ``RGB``, ``RGBA``, ...)."""
        raise NotImplementedError

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        """``i -> (image, label, i)``; ``(i, seed)`` runs the transform with torch's CPU RNG seeded."""
        if isinstance(item, tuple):
            i, seed = int(item[0]), int(item[1])
            image = self.load(i)
            # fork_rng restores the global CPU generator afterwards. Seeding only the CPU default
            # generator (not torch.manual_seed) leaves any CUDA generator untouched: torchvision's
            # transforms draw from the CPU generator only.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                x = self._apply(image)
        else:
            i = int(item)
            x = self._apply(self.load(i))
        return x, int(self.labels[i]), i

    def _apply(self, image: Image.Image) -> torch.Tensor:
        if self.transform is None:
            raise EifError("this image set has no transform; call with_transform(build_transform(...)) first")
        return self.transform(image)

    def with_transform(self, transform: Transform | None) -> ImageSet:
        """A shallow copy that shares the images and labels but uses ``transform``."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def with_labels(self, labels: np.ndarray) -> ImageSet:
        """A shallow copy whose training labels are ``labels`` (int64 (N,)); clean labels are kept."""
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.shape != self.clean_labels.shape:
            raise ValueError(f"labels must have shape {self.clean_labels.shape}, got {labels.shape}")
        other = copy.copy(self)
        other.labels = labels
        return other

    def subset(self, index: np.ndarray, labels: np.ndarray | None = None) -> ImageSet:
        """The images at ``index`` (int (M,)), relabelled with ``labels`` (int64 (M,)) if given."""
        raise NotImplementedError


class ArrayImageSet(ImageSet):
    """Images held in memory as uint8 ``(N, H, W)`` (grayscale) or ``(N, H, W, 3)`` (RGB)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Transform | None = None,
        clean_labels: np.ndarray | None = None,
    ) -> None:
        super().__init__(labels, transform, clean_labels)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] != len(self):
            raise ValueError(
                f"images must be uint8 (N, H, W[, 3]) with N={len(self)}, got {images.dtype} {images.shape}"
            )
        self.images = images

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])

    def subset(self, index: np.ndarray, labels: np.ndarray | None = None) -> ArrayImageSet:
        index = np.asarray(index, dtype=np.int64)
        lab = self.labels[index] if labels is None else labels
        return ArrayImageSet(
            self.images[index], lab, self.transform, self.clean_labels[index] if labels is None else labels
        )


class FileImageSet(ImageSet):
    """Images read from files with PIL (decoded on every access).

    ``root``: the data set's directory; ``paths``: image paths relative to it (POSIX), so artifacts
    that name images stay valid when the data set moves.
    """

    paths: list[str]

    def __init__(
        self,
        root: str | Path,
        paths: list[str],
        labels: np.ndarray,
        transform: Transform | None = None,
        clean_labels: np.ndarray | None = None,
    ) -> None:
        super().__init__(labels, transform, clean_labels)
        if len(paths) != len(self):
            raise ValueError(f"{len(paths)} paths for {len(self)} labels")
        self.root = Path(root)
        self.paths = list(paths)

    def file(self, i: int) -> Path:
        """The absolute path of image ``i``."""
        return self.root / self.paths[i]

    def load(self, i: int) -> Image.Image:
        path = self.file(i)
        try:
            with Image.open(path) as im:
                im.load()
                return im
        except FileNotFoundError:
            raise EifError(f"image file missing: {path}") from None
        except OSError as e:
            raise EifError(f"cannot decode image {path}: {e}") from None

    def subset(self, index: np.ndarray, labels: np.ndarray | None = None) -> FileImageSet:
        index = np.asarray(index, dtype=np.int64)
        lab = self.labels[index] if labels is None else labels
        paths = np.asarray(self.paths, dtype=object)[index].tolist()
        return FileImageSet(
            self.root, paths, lab, self.transform, self.clean_labels[index] if labels is None else labels
        )


def crop_box(box: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``box`` ``(x1, y1, x2, y2)`` clipped to an image of ``size`` ``(w, h)``; None when nothing is left."""
    w, h = size
    x1, y1, x2, y2 = (int(v) for v in box)
    clipped = (min(x1, w), min(y1, h), min(x2, w), min(y2, h))
    return clipped if clipped[0] < clipped[2] and clipped[1] < clipped[3] else None


class CroppedFileImageSet(FileImageSet):
    """A :class:`FileImageSet` whose images are cropped to a bounding box on load.

    ``boxes``: int64 (N, 4), ``(x1, y1, x2, y2)`` in pixels (PIL's crop: right and bottom exclusive);
    a row of -1 keeps the whole image. A box that reaches past the image is clipped to it (as slicing
    does in open-metric-learning); one that lies outside the image is an error.
    """

    def __init__(
        self,
        root: str | Path,
        paths: list[str],
        labels: np.ndarray,
        boxes: np.ndarray,
        transform: Transform | None = None,
        clean_labels: np.ndarray | None = None,
    ) -> None:
        super().__init__(root, paths, labels, transform, clean_labels)
        self.boxes = np.ascontiguousarray(boxes, dtype=np.int64)
        if self.boxes.shape != (len(self), 4):
            raise ValueError(f"boxes must have shape ({len(self)}, 4), got {self.boxes.shape}")

    def load(self, i: int) -> Image.Image:
        image = super().load(i)
        if self.boxes[i, 0] < 0:
            return image
        box = crop_box(self.boxes[i], image.size)
        if box is None:
            w, h = image.size
            raise EifError(
                f"bounding box {tuple(self.boxes[i].tolist())} lies outside the {w}x{h} image {self.file(i)}"
            )
        return image.crop(box)

    def subset(self, index: np.ndarray, labels: np.ndarray | None = None) -> CroppedFileImageSet:
        part = super().subset(index, labels)
        boxes = self.boxes[np.asarray(index, dtype=np.int64)]
        return CroppedFileImageSet(
            part.root, part.paths, part.labels, boxes, part.transform, part.clean_labels
        )


@dataclass
class NoiseInfo:
    """Label noise injected into the training split.

    ``flipped``: int64 (M,) ascending indices into ``train``; ``clean_labels_of_flipped``: int64
    (M,) their true labels (``train.labels[flipped]`` holds the noisy ones).
    """

    fraction: float
    rule: str
    flipped: np.ndarray
    clean_labels_of_flipped: np.ndarray


@dataclass
class DataBundle:
    """The splits of one dataset.

    ``train`` labels are ``0..num_train_classes-1`` in the order of ``train_class_names``. ``test`` is
    the pooled test set (InShop: query + gallery); its labels are the dataset's own class ids (InShop:
    ``num_train_classes`` + the rank of the item id). ``query``/``gallery`` are set for data sets with
    separate query and gallery images (InShop, ``dataframe`` with exclusive flags).
    ``test_class_names[k]`` names the k-th distinct test label in ascending order.
    """

    train: ImageSet
    test: ImageSet
    query: ImageSet | None
    gallery: ImageSet | None
    num_train_classes: int
    train_class_names: list[str]
    test_class_names: list[str]
    noise: NoiseInfo
