"""Image transforms from the dataset config (``dataset.transforms``).

``build_transform(tcfg, which)`` with ``which`` in ``train | eval | influence`` composes: an optional
conversion to RGB (``to_rgb``), the geometric step named by ``tcfg[which].name``, ``ToTensor`` (uint8
-> float in [0, 1], (C, H, W)) and ``Normalize(mean, std)``. Geometric steps:

- ``random_resized_crop``: ``{size, scale: [lo, hi], ratio: [lo, hi] (default 3/4..4/3), flip}``
- ``resize_center_crop``: ``{resize, crop}``: short side to ``resize``, centre crop ``crop``
- ``resize``: ``{resize}``: short side to ``resize``, no crop (image sizes then vary)
- ``none``: keep the image as it is.

Grayscale images stay 1-channel unless ``to_rgb`` is true. Random steps draw from torch's global CPU
generator; :class:`eif.data.base.ImageSet` seeds it per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image
from torchvision import transforms as T

from eif.utils.errors import EifError

WHICH = ("train", "eval", "influence")


class ToRGB:
    """Convert any PIL mode (L, RGBA, P, CMYK, ...) to RGB; alpha is dropped, not composited."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def _geometric(spec: Mapping[str, Any], where: str) -> list[Any]:
    name = spec.get("name")
    try:
        if name == "random_resized_crop":
            scale = tuple(float(s) for s in spec.get("scale", (0.08, 1.0)))
            ratio = tuple(float(r) for r in spec.get("ratio", (3 / 4, 4 / 3)))
            steps: list[Any] = [T.RandomResizedCrop(int(spec["size"]), scale=scale, ratio=ratio)]
            if spec.get("flip", False):
                steps.append(T.RandomHorizontalFlip(0.5))
            return steps
        if name == "resize_center_crop":
            return [T.Resize(int(spec["resize"])), T.CenterCrop(int(spec["crop"]))]
        if name == "resize":
            return [T.Resize(int(spec["resize"]))]
        if name == "none":
            return []
    except KeyError as e:
        raise EifError(f"{where}: transform {name!r} needs the field {e.args[0]!r}") from None
    raise EifError(
        f"{where}: unknown transform name {name!r}; use random_resized_crop, "
        "resize_center_crop, resize or none"
    )


def build_transform(tcfg: Mapping[str, Any], which: str) -> T.Compose:
    """The ``which`` (train | eval | influence) transform of ``tcfg`` (a ``dataset.transforms`` node)."""
    if which not in WHICH:
        raise EifError(f"transform kind must be one of {', '.join(WHICH)}, got {which!r}")
    if which not in tcfg:
        raise EifError(f"dataset.transforms has no {which!r} entry")
    mean = [float(m) for m in tcfg["mean"]]
    std = [float(s) for s in tcfg["std"]]
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise EifError(f"dataset.transforms: mean {mean} and std {std} need equal lengths and std > 0")
    steps: list[Any] = [ToRGB()] if tcfg.get("to_rgb", False) else []
    steps += _geometric(tcfg[which], f"dataset.transforms.{which}")
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
