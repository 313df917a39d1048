"""The dataset config files compose with the real Hydra config and drive build_data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from eif.data import build_data
from eif.data.fashion_mnist import find_files
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
        ("imagefolder", make_imagefolder, 3, 9, 9),
    ],
)
def test_paper_dataset_configs(
    tmp_path: Path, name: str, maker, n_train_classes: int, n_train: int, n_test: int
) -> None:
    cfg = _compose([f"dataset={name}", "noise=p10"])
    assert cfg.model.name == "resnet50" and cfg.dataset.name == name
    rule = "uniform" if name == "imagefolder" else "shift"
    assert cfg.dataset.noise_rule == rule and cfg.noise.rule == rule
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
