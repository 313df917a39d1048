"""Fashion-MNIST: IDX reading (gz and raw), pooling, per-class cap, class split, the real files."""

from __future__ import annotations

import gzip
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from torchvision.datasets import FashionMNIST

import eif.data.fashion_mnist as fm
from eif.data import build_data
from eif.utils.errors import EifError
from eif.utils.io import write_bytes
from tests.fixtures import make_fashion_idx

CONF = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "fashion_mnist.yaml")
REAL_ROOT = Path(str(CONF.root))
needs_real = pytest.mark.skipif(
    fm.find_files(REAL_ROOT) is None, reason="Debian's dataset-fashion-mnist is not installed"
)


def _cfg(root: Path, **dataset) -> OmegaConf:
    return OmegaConf.create(
        {
            "seed": 0,
            "noise": {"fraction": 0.0, "rule": "uniform"},
            "dataset": {**OmegaConf.to_container(CONF), "root": str(root), **dataset},
        }
    )


@pytest.mark.parametrize("gz,sub", [(True, ""), (False, ""), (False, "FashionMNIST/raw")])
def test_fake_idx_pooled_and_split(tmp_path: Path, gz: bool, sub: str) -> None:
    made = make_fashion_idx(tmp_path / sub, n_train=60, n_test=20, gz=gz)
    b = build_data(_cfg(tmp_path, max_per_class=None))
    y = made["labels"]
    train = np.flatnonzero(y < 5)
    assert (len(b.train), len(b.test)) == (train.size, 80 - train.size)
    np.testing.assert_array_equal(b.train.labels, y[train])
    np.testing.assert_array_equal(b.train.images, made["images"][train])
    np.testing.assert_array_equal(b.test.labels, y[y >= 5])
    assert b.train_class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]


def test_cap_and_class_order(tmp_path: Path) -> None:
    made = make_fashion_idx(tmp_path, n_train=60, n_test=20)
    b = build_data(_cfg(tmp_path, max_per_class=3, train_classes=[7, 2], test_classes=[0, 9]))
    y = made["labels"]
    first3 = {c: np.flatnonzero(y == c)[:3] for c in (7, 2, 0, 9)}
    train = np.sort(np.r_[first3[7], first3[2]])
    np.testing.assert_array_equal(b.train.images, made["images"][train])
    np.testing.assert_array_equal(b.train.labels, np.where(y[train] == 7, 0, 1))
    np.testing.assert_array_equal(b.test.labels, y[np.sort(np.r_[first3[0], first3[9]])])
    assert b.test_class_names == ["T-shirt/top", "Ankle boot"]


def test_cap_per_class_matches_pandas() -> None:
    labels = np.random.default_rng(0).integers(0, 7, size=500)
    expect = pd.Series(labels).groupby(labels).head(11).index.to_numpy()
    np.testing.assert_array_equal(fm.cap_per_class(labels, 11), expect)
    np.testing.assert_array_equal(fm.cap_per_class(labels, None), np.arange(500))


def test_idx_errors(tmp_path: Path) -> None:
    make_fashion_idx(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    with pytest.raises(EifError, match=r"not a uint8 IDX file with 3 dimensions \(magic 2049, expected 2051"):
        fm.read_idx(path, 3)
    write_bytes(path, path.read_bytes()[:-5])
    with pytest.raises(EifError, match=r"header says \(60,\) = 60 bytes, found 55"):
        build_data(_cfg(tmp_path))


def test_missing_and_download_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        EifError,
        match=r"fashion_mnist: data not found under .*expected the four IDX files "
        r"train-images-idx3-ubyte.*root/FashionMNIST/raw",
    ):
        build_data(_cfg(tmp_path))

    def offline(*args, **kwargs):  # stands in for the network, not for the code under test
        raise urllib.error.URLError("Name or service not known\nsecond line")

    monkeypatch.setattr(fm, "FashionMNIST", offline)
    with pytest.raises(EifError) as err:
        build_data(_cfg(tmp_path, download=True))
    assert "\n" not in str(err.value)
    assert "download into" in str(err.value) and "URLError" in str(err.value)


@needs_real
def test_real_counts() -> None:
    b = build_data(_cfg(REAL_ROOT))
    assert (len(b.train), len(b.test)) == (5000, 5000)
    np.testing.assert_array_equal(np.bincount(b.train.labels), [1000] * 5)
    np.testing.assert_array_equal(np.unique(b.test.labels, return_counts=True)[1], [1000] * 5)
    b = build_data(_cfg(REAL_ROOT, max_per_class=None))
    assert (len(b.train), len(b.test)) == (35000, 35000)
    assert b.train[0][0].shape == (1, 28, 28)


@needs_real
def test_real_pixels_equal_torchvision(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    files = fm.find_files(REAL_ROOT)
    for name, path in files.items():
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        write_bytes(raw / name, data)
    tv = [FashionMNIST(str(tmp_path), train=t, download=False) for t in (True, False)]
    images = np.concatenate([d.data.numpy() for d in tv])
    labels = np.concatenate([d.targets.numpy() for d in tv])
    ours_x = np.concatenate([fm.read_idx(files[fm.FILES[0]], 3), fm.read_idx(files[fm.FILES[2]], 3)])
    ours_y = np.concatenate([fm.read_idx(files[fm.FILES[1]], 1), fm.read_idx(files[fm.FILES[3]], 1)])
    assert ours_x.shape == (70000, 28, 28)
    np.testing.assert_array_equal(ours_x, images)
    np.testing.assert_array_equal(ours_y, labels)
    # The same pixels through the dataset object (pooled order, first 1000 per class).
    b = build_data(_cfg(REAL_ROOT))
    keep = fm.cap_per_class(labels, 1000)
    keep = keep[labels[keep] < 5]
    np.testing.assert_array_equal(b.train.images, images[keep])
