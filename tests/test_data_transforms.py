"""Transforms from the dataset configs and seeded (pure) augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from eif.data.base import ArrayImageSet, FileImageSet
from eif.data.samplers import BalancedBatchSampler
from eif.data.transforms import build_transform
from eif.utils.errors import EifError
from tests.fixtures import write_image

CONF = Path(__file__).parents[1] / "conf" / "dataset"
IMAGENET = OmegaConf.load(CONF / "transforms" / "imagenet.yaml")
FASHION = OmegaConf.load(CONF / "fashion_mnist.yaml").transforms


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> FileImageSet:
    """Three files: 300x200 RGB JPEG, 120x160 grayscale JPEG, 64x64 RGBA PNG."""
    root = tmp_path_factory.mktemp("photos")
    specs = [("a.jpg", 300, 200, "RGB"), ("b.jpg", 120, 160, "L"), ("c.png", 64, 64, "RGBA")]
    for k, (name, w, h, mode) in enumerate(specs):
        write_image(root / name, w, h, seed=k, mode=mode)
    return FileImageSet(root, [s[0] for s in specs], np.array([0, 1, 2]))


def test_imagenet_shapes(photos: FileImageSet) -> None:
    shapes = {
        which: [tuple(photos.with_transform(build_transform(IMAGENET, which))[i][0].shape) for i in range(3)]
        for which in ("train", "eval", "influence")
    }
    assert shapes["train"] == [(3, 256, 256)] * 3
    assert shapes["eval"] == [(3, 256, 256)] * 3
    # Resize(256) on the short side, no crop: 300x200 -> 384x256, 120x160 -> 256x341.
    assert shapes["influence"] == [(3, 256, 384), (3, 341, 256), (3, 256, 256)]


def test_normalisation_values() -> None:
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = ArrayImageSet(images, np.array([0]), build_transform(FASHION, "eval"))[0][0]
    assert x.shape == (1, 2, 2)
    expect = (images[0] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(x[0].numpy(), expect, rtol=1e-6)
    rgb = ArrayImageSet(images, np.array([0]), build_transform({**FASHION, "to_rgb": True}, "eval"))[0][0]
    assert rgb.shape == (3, 2, 2) and torch.equal(rgb[0], rgb[2])


def test_seeded_augmentation_is_pure(photos: FileImageSet) -> None:
    ds = photos.with_transform(build_transform(IMAGENET, "train"))
    before = torch.random.get_rng_state()
    a, y, i = ds[(0, 123)]
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is untouched
    assert (y, i) == (0, 0)
    assert torch.equal(a, ds[(0, 123)][0])
    assert not torch.equal(a, ds[(0, 124)][0])
    # Exactly "the transform run right after seeding torch's CPU generator".
    torch.manual_seed(123)
    assert torch.equal(a, build_transform(IMAGENET, "train")(photos.load(0)))
    # Unseeded access draws from the global generator and differs between calls.
    torch.manual_seed(0)
    assert not torch.equal(ds[0][0], ds[0][0])


def test_batches_reproduce_across_loaders() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    ds = ArrayImageSet(images, np.arange(40) % 5, build_transform(FASHION, "train"))

    def epoch(workers: int, start: int) -> list[torch.Tensor]:
        sampler = BalancedBatchSampler(ds.labels, 5, 2, seed=4, epoch=1, start_batch=start)
        return [x for x, _, _ in DataLoader(ds, batch_sampler=sampler, num_workers=workers)]

    full = epoch(0, 0)
    assert len(full) == 3 and full[0].shape == (10, 1, 28, 28)
    resumed = epoch(1, 1)  # another process, mid-epoch start: same augmented batches
    assert all(torch.equal(a, b) for a, b in zip(full[1:], resumed, strict=True))


@pytest.mark.parametrize(
    "tcfg,which,message",
    [
        ({**IMAGENET, "eval": {"name": "rotate"}}, "eval", "unknown transform name 'rotate'"),
        (
            {**IMAGENET, "eval": {"name": "resize_center_crop", "resize": 288}},
            "eval",
            r"dataset\.transforms\.eval\.crop: field required",
        ),
        (IMAGENET, "test", "transform kind must be one of train, eval, influence, got 'test'"),
        ({**IMAGENET, "std": [0.2, 0.2]}, "eval", "need equal, non-zero lengths"),
        (
            {**IMAGENET, "to_rgb": True, "mean": [0.1, 0.2], "std": [0.2, 0.2]},
            "eval",
            "to_rgb gives 3 channels",
        ),
    ],
)
def test_transform_errors(tcfg, which: str, message: str) -> None:
    with pytest.raises(EifError, match=message):
        build_transform(tcfg, which)


def test_missing_transform_raises_eif_error() -> None:
    with pytest.raises(EifError, match="no transform; call with_transform"):
        ArrayImageSet(np.zeros((1, 2, 2), dtype=np.uint8), np.array([0]))[0]
