"""The dataset config files compose with the real Hydra config and drive build_data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from eif.config import load_job
from eif.data import build_data
from eif.data.fashion_mnist import find_files
from eif.pipeline import Env
from tests.fixtures import make_cars, make_cub, make_imagefolder, make_inshop

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize(
    "name,maker,n_train_classes,n_train,n_test",
    [
        ("cub", make_cub, 100, 199, 200),
        ("cars", make_cars, 98, 147, 147),
        ("inshop", make_inshop, 12, 24, 27),
    ],
)
def test_paper_dataset_configs(
    tmp_path: Path, name: str, maker, n_train_classes: int, n_train: int, n_test: int
) -> None:
    cfg = _compose([f"dataset={name}", "noise=p10"])
    assert cfg.model.name == "resnet50" and cfg.dataset.name == name
    assert cfg.dataset.noise_rule == "shift" and cfg.noise.rule == "shift"
    assert cfg.dataset.transforms.eval == {"name": "resize_center_crop", "resize": 288, "crop": 256}
    maker(tmp_path)
    with open_dict(cfg):
        cfg.dataset.root = str(tmp_path)
    b = build_data(cfg)
    assert (b.num_train_classes, len(b.train), len(b.test)) == (n_train_classes, n_train, n_test)
    assert b.noise.flipped.size == int(0.1 * n_train)
    assert (b.query is not None) == (name == "inshop")
    assert b.train[0][0].shape == (3, 256, 256)


def test_inshop_batch_is_32_by_3() -> None:
    cfg = _compose(["dataset=inshop"])
    assert (cfg.dataset.batch.classes_per_batch, cfg.dataset.batch.samples_per_class) == (32, 3)
    assert list(cfg.dataset.recall_at) == [1, 10, 20, 30, 40, 50]


def test_fashion_mnist_default(tmp_path: Path) -> None:
    cfg = _compose(["dataset.max_per_class=20"])
    assert cfg.model.name == "small_cnn" and cfg.dataset.name == "fashion_mnist"
    assert cfg.dataset.noise_rule == "uniform"
    if find_files(Path(str(cfg.dataset.root))) is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    b = build_data(cfg)
    assert (len(b.train), len(b.test), b.num_train_classes) == (100, 100, 5)
    np.testing.assert_array_equal(np.bincount(b.train.labels), [20] * 5)
    assert b.train[0][0].shape == (1, 28, 28)


def test_imagefolder_config_is_auto_and_picks_from_the_images(tmp_path: Path) -> None:
    """dataset=imagefolder keeps the default small CNN and leaves channels, normalisation, sizes and the
    batch to the data: the fixture mixes RGB, RGBA and grayscale images of 8x8 to 16x12 pixels, 3 train
    classes of 3 images."""
    cfg = _compose(["dataset=imagefolder", "noise=p10"])
    assert cfg.model.name == "small_cnn" and cfg.model.in_channels == "auto"
    assert cfg.dataset.noise_rule == "uniform" and cfg.noise.rule == "uniform"
    assert {k: cfg.dataset.transforms[k] for k in ("to_rgb", "mean", "eval")} == dict.fromkeys(
        ("to_rgb", "mean", "eval"), "auto"
    )
    make_imagefolder(tmp_path / "data")
    with open_dict(cfg):
        cfg.dataset.root = str(tmp_path / "data")
        cfg.paths.output_dir = str(tmp_path / "run")
    env = Env(load_job(cfg), tmp_path / "cache")
    job = env.job
    tf, batch = job.dataset.transforms, job.dataset.batch
    assert tf.to_rgb is True and len(tf.mean) == len(tf.std) == 3 and job.model.in_channels == 3
    assert tf.eval.name == "resize_center_crop" and tf.eval.crop == 8  # the median short side (all 8 high)
    assert (batch.classes_per_batch, batch.samples_per_class) == (3, 2)
    assert env.resolved["dataset.transforms.to_rgb"] is True
    b = env.bundle
    assert (b.num_train_classes, len(b.train), len(b.test)) == (3, 9, 9)
    assert b.train_class_names == ["ant", "bee", "cat"] and b.test_class_names == ["dog", "eel", "fox"]
    assert b.noise.flipped.size == int(0.1 * 9)
    assert b.train[0][0].shape == (3, 8, 8)
