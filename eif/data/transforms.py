"""Image transforms from ``dataset.transforms`` (typed settings) and how they are built.

``TransformsConfig.build(which)`` with ``which`` in ``train | eval | influence`` composes: an optional
conversion to RGB (``to_rgb``), the geometric step ``transforms.<which>``, ``ToTensor`` (uint8 ->
float in [0, 1], (C, H, W)) and ``Normalize(mean, std)``. Geometric steps, chosen by ``name``:

- ``random_resized_crop``: ``{size, scale: [lo, hi], ratio: [lo, hi] (default 3/4..4/3), flip}``
- ``resize_center_crop``: ``{resize, crop}``: short side to ``resize``, centre crop ``crop``
- ``resize``: ``{resize}``: short side to ``resize``, no crop (image sizes then vary)
- ``none``: keep the image as it is.

Grayscale images stay 1-channel unless ``to_rgb`` is true; ``len(mean)`` is the channel count the
model receives (3 with ``to_rgb``). Random steps draw from torch's global CPU generator;
:class:`eif.data.base.ImageSet` seeds it per sample.

Every setting may be ``auto`` (``conf/dataset/imagefolder.yaml``): :mod:`eif.data.auto` picks it from
the images when a job runs (docs/data.md, "Image folders"); only resolved transforms are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from PIL import Image
from pydantic import PositiveFloat, PositiveInt, model_validator
from torchvision import transforms as T

from eif.settings import OrAuto, Settings, has_auto, parse
from eif.utils.errors import EifError

WHICH = ("train", "eval", "influence")


class ToRGB:
    """Convert any PIL mode (L, RGBA, P, CMYK, ...) to RGB; alpha is dropped, not composited."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class Geometric(Settings):
    """The geometric step of a transform; ``name`` picks the class (the steps below)."""

    name: str

    @model_validator(mode="wrap")
    @classmethod
    def _by_name(cls, data: Any, handler: Any) -> Any:
        if cls is Geometric and isinstance(data, Mapping):
            kind = _GEOMETRIC.get(str(data.get("name")))
            if kind is None:
                raise ValueError(f"unknown transform name {data.get('name')!r}; use {', '.join(_GEOMETRIC)}")
            return kind.model_validate(data)
        return handler(data)

    def steps(self) -> list[Any]:
        raise NotImplementedError


class RandomResizedCrop(Geometric):
    name: Literal["random_resized_crop"]
    size: PositiveInt
    scale: tuple[PositiveFloat, PositiveFloat] = (0.08, 1.0)
    ratio: tuple[PositiveFloat, PositiveFloat] = (3 / 4, 4 / 3)
    flip: bool = False

    def steps(self) -> list[Any]:
        out: list[Any] = [T.RandomResizedCrop(self.size, scale=self.scale, ratio=self.ratio)]
        return out + ([T.RandomHorizontalFlip(0.5)] if self.flip else [])


class ResizeCenterCrop(Geometric):
    name: Literal["resize_center_crop"]
    resize: PositiveInt
    crop: PositiveInt

    def steps(self) -> list[Any]:
        return [T.Resize(self.resize), T.CenterCrop(self.crop)]


class Resize(Geometric):
    name: Literal["resize"]
    resize: PositiveInt

    def steps(self) -> list[Any]:
        return [T.Resize(self.resize)]


class NoGeometric(Geometric):
    name: Literal["none"]

    def steps(self) -> list[Any]:
        return []


_GEOMETRIC: dict[str, type[Geometric]] = {
    "random_resized_crop": RandomResizedCrop,
    "resize_center_crop": ResizeCenterCrop,
    "resize": Resize,
    "none": NoGeometric,
}


class Normalization(Settings):
    """What every transform of a data set shares: RGB conversion and per-channel normalisation."""

    mean: OrAuto[tuple[float, ...]]
    std: OrAuto[tuple[PositiveFloat, ...]]
    to_rgb: OrAuto[bool] = False

    @model_validator(mode="after")
    def _lengths(self) -> Normalization:
        if has_auto(self):
            return self
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean {list(self.mean)} and std {list(self.std)} need equal, non-zero lengths")
        if self.to_rgb and len(self.mean) not in (1, 3):
            raise ValueError(
                f"to_rgb gives 3 channels, but mean and std have {len(self.mean)} entries (1 or 3)"
            )
        return self

    @property
    def channels(self) -> int | None:
        """Channels of the tensors the model receives (one mean/std entry is broadcast over RGB); None
        for inputs that are not images (:class:`eif.data.features.FeatureTransforms`)."""
        return 3 if self.to_rgb is True else len(self.mean)


class TransformsConfig(Normalization):
    """``dataset.transforms``: the normalisation plus one geometric step per use."""

    train: OrAuto[Geometric]
    eval: OrAuto[Geometric]
    influence: OrAuto[Geometric]

    @property
    def normalization(self) -> Normalization:
        return Normalization(mean=self.mean, std=self.std, to_rgb=self.to_rgb)

    def build(self, which: str) -> T.Compose:
        """The ``which`` (train | eval | influence) transform."""
        if which not in WHICH:
            raise EifError(f"transform kind must be one of {', '.join(WHICH)}, got {which!r}")
        if has_auto(self):
            raise EifError("dataset.transforms has auto settings: resolve them first (eif.data.auto)")
        return compose(self.normalization, getattr(self, which))


def compose(norm: Normalization, geometric: Any) -> T.Compose:
    """RGB conversion (if asked), the geometric steps, ToTensor and Normalize (left out for mean 0, std 1:
    the identity, e.g. on precomputed feature vectors)."""
    steps: list[Any] = [ToRGB()] if norm.to_rgb else []
    steps += geometric.steps()
    steps.append(T.ToTensor())
    if any(m != 0 for m in norm.mean) or any(s != 1 for s in norm.std):  # else Normalize is the identity
        steps.append(T.Normalize(list(norm.mean), list(norm.std)))
    return T.Compose(steps)


def build_transform(tcfg: TransformsConfig | Mapping[str, Any], which: str) -> T.Compose:
    """The ``which`` transform of a ``dataset.transforms`` node (settings object or plain mapping)."""
    if not isinstance(tcfg, TransformsConfig):
        tcfg = parse(TransformsConfig, tcfg, "dataset.transforms")
    return tcfg.build(which)
