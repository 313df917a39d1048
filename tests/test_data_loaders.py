"""The dataset readers on tiny trees in the official formats (tests/fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from omegaconf import OmegaConf

from eif.data import build_data
from eif.utils.errors import EifError
from eif.utils.io import write_bytes, write_text, write_with
from tests.fixtures import (
    cars_images_per_class,
    cub_images_per_class,
    make_cars,
    make_cub,
    make_imagefolder,
    make_inshop,
)

IMAGENET = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "transforms" / "imagenet.yaml")


TARGETS = {
    "cub": "eif.data.folders.Cub",
    "cars": "eif.data.cars.Cars",
    "inshop": "eif.data.inshop.InShop",
    "imagefolder": "eif.data.folders.ImageFolder",
}
# The settings every data set has; these tests are about what the readers read.
COMMON = {
    "noise_rule": "shift",
    "batch": {"classes_per_batch": 2, "samples_per_class": 2},
    "recall_at": [1],
    "influence_transform": "influence",
}


def _cfg(dataset: dict, fraction: float = 0.0, rule: str = "shift", seed: int = 0):
    target = TARGETS.get(dataset["name"], f"eif.data.{dataset['name']}.Nope")
    return OmegaConf.create(
        {
            "seed": seed,
            "noise": {"fraction": fraction, "rule": rule},
            "dataset": {"_target_": target, **COMMON, **dataset, "transforms": IMAGENET},
        }
    )


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cub")
    return root, make_cub(root)


@pytest.fixture(scope="module")
def cars_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cars")
    return root, make_cars(root)


@pytest.fixture(scope="module")
def inshop_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("inshop")
    return root, make_inshop(root)


def _cub(root: Path, **kw) -> dict:
    return {
        "name": "cub",
        "root": str(root),
        "train_classes": {"start": 0, "stop": 100},
        "test_classes": {"start": 100, "stop": 200},
        **kw,
    }


def test_cub_paper_split(cub_root) -> None:
    root, made = cub_root
    b = build_data(_cfg(_cub(root)))
    n_train = sum(cub_images_per_class(c) for c in range(100))
    n_test = sum(cub_images_per_class(c) for c in range(100, 200))
    assert (len(b.train), len(b.test), n_train, n_test) == (n_train, n_test, 199, 200)
    assert b.num_train_classes == 100 and b.query is None and b.gallery is None
    assert len(b.test_class_names) == 100 and b.train_class_names[0] == "001.Bird_001"
    np.testing.assert_array_equal(b.train.labels, made["labels"][made["labels"] < 100])
    np.testing.assert_array_equal(b.test.labels, made["labels"][made["labels"] >= 100])
    assert not any(Path(p).name.startswith("._") for p in b.train.paths)
    # Grayscale JPEG comes out 3-channel with to_rgb; the eval transform gives 256x256.
    x, y, i = b.train[0]
    assert x.shape == (3, 256, 256) and (y, i) == (0, 0)
    assert b.train.load(0).mode == "L"


def test_cub_class_lists_remap_in_list_order(cub_root) -> None:
    root, made = cub_root
    b = build_data(_cfg(_cub(root, train_classes=[5, 2, 8], test_classes=[150, 120])))
    assert b.train_class_names == ["006.Bird_006", "003.Bird_003", "009.Bird_009"]
    assert b.test_class_names == ["121.Bird_121", "151.Bird_151"]
    expect = np.concatenate([np.full(cub_images_per_class(c), {5: 0, 2: 1, 8: 2}[c]) for c in (2, 5, 8)])
    np.testing.assert_array_equal(b.train.labels, expect)  # file order: class 2, then 5, then 8
    assert sorted(set(b.test.labels.tolist())) == [120, 150]


def test_cub_errors(tmp_path, cub_root) -> None:
    root, _ = cub_root
    with pytest.raises(
        EifError,
        match=r"cub: data not found: .*images is not a directory; expected "
        r"root/images/NNN\.Name/\*\.jpg",
    ):
        build_data(_cfg(_cub(tmp_path / "nowhere")))
    with pytest.raises(
        EifError,
        match=r"train_classes has 5 class ids with no images in the data "
        r"\(200, 201, 202, 203, 204\).*0\.\.199 \(200 classes\)",
    ):
        build_data(_cfg(_cub(root, train_classes={"start": 195, "stop": 205})))
    with pytest.raises(EifError, match="train and test classes overlap in 10 classes"):
        build_data(_cfg(_cub(root, train_classes={"start": 0, "stop": 110})))
    with pytest.raises(EifError, match="test_classes is empty"):
        build_data(_cfg(_cub(root, test_classes=[])))
    with pytest.raises(EifError, match=r"dataset\.test_classes.*(start|first)"):
        build_data(_cfg(_cub(root, test_classes={"first": 100})))
    # A folder whose images are all AppleDouble files counts as missing data.
    write_bytes(tmp_path / "images" / "001.A" / "._x.jpg", b"junk")
    with pytest.raises(EifError, match="cub: no images under"):
        build_data(_cfg(_cub(tmp_path)))


def test_cars_split_ignores_test_flag(cars_root) -> None:
    root, made = cars_root
    cfg = _cfg(
        {
            "name": "cars",
            "root": str(root),
            "train_classes": {"start": 0, "stop": 98},
            "test_classes": {"start": 98, "stop": 196},
        }
    )
    b = build_data(cfg)
    n_train = sum(cars_images_per_class(c) for c in range(98))
    assert (len(b.train), len(b.test), n_train) == (n_train, 294 - n_train, 147)
    assert b.num_train_classes == 98 and b.train_class_names[0] == "Make Model 1 2012"
    assert len(b.test_class_names) == 98 and b.test_class_names[-1] == "Make Model 196 2012"
    keep = made["labels"] < 98
    np.testing.assert_array_equal(b.train.labels, made["labels"][keep])
    assert b.train.paths == [str(p) for p in made["paths"][keep]]  # relative to the root
    assert b.train.file(0) == root / made["paths"][keep][0]
    np.testing.assert_array_equal(b.test.labels, made["labels"][~keep])
    assert b.test[0][0].shape == (3, 256, 256)


def test_cars_errors(tmp_path) -> None:
    cfg = _cfg({"name": "cars", "root": str(tmp_path), "train_classes": [0], "test_classes": [1]})
    with pytest.raises(EifError, match=r"cars_annos\.mat not found; expected root/cars_annos\.mat"):
        build_data(cfg)
    write_with(tmp_path / "cars_annos.mat", lambda p: scipy.io.savemat(str(p), {"other": np.zeros(3)}))
    with pytest.raises(EifError, match="lacks the struct array 'annotations'"):
        build_data(cfg)


def test_inshop_train_query_gallery(inshop_root) -> None:
    root, made = inshop_root
    b = build_data(_cfg({"name": "inshop", "root": str(root)}))
    items, status = made["items"], made["status"]
    train_items = np.unique(items[status == "train"])
    assert b.num_train_classes == train_items.size == 12
    assert (len(b.train), len(b.query), len(b.gallery)) == tuple(
        (status == s).sum() for s in ("train", "query", "gallery")
    )
    # Train ids remapped by sorted order: id 1 -> 0, id 3 -> 1, ...
    np.testing.assert_array_equal(b.train.labels, np.searchsorted(train_items, items[status == "train"]))
    assert b.train_class_names[:2] == ["id_00000001", "id_00000003"]
    # Query/gallery share labels C + rank of the item id; the pooled test set is query then gallery.
    test_items = np.unique(items[status != "train"])
    np.testing.assert_array_equal(b.query.labels, 12 + np.searchsorted(test_items, items[status == "query"]))
    np.testing.assert_array_equal(
        b.gallery.labels, 12 + np.searchsorted(test_items, items[status == "gallery"])
    )
    np.testing.assert_array_equal(b.test.labels, np.concatenate([b.query.labels, b.gallery.labels]))
    assert b.test.paths == b.query.paths + b.gallery.paths
    assert b.test_class_names == [f"id_{i:08d}" for i in test_items]
    assert set(b.query.labels) == set(b.gallery.labels)
    assert b.query.paths[0].endswith("img/WOMEN/Dresses/id_00000002/01_1_front.jpg")


def test_inshop_errors(tmp_path, inshop_root) -> None:
    cfg = _cfg({"name": "inshop", "root": str(tmp_path)})
    with pytest.raises(EifError, match=r"Eval/list_eval_partition\.txt not found; expected root/Eval/"):
        build_data(cfg)
    root, _ = inshop_root
    lines = (root / "Eval" / "list_eval_partition.txt").read_text().splitlines()
    part = tmp_path / "Eval" / "list_eval_partition.txt"
    write_text(part, "\n".join(lines[:-3]) + "\n")
    with pytest.raises(EifError, match=f"announces {len(lines) - 2} rows but has {len(lines) - 5}"):
        build_data(cfg)
    # A train item that also appears in query.
    rows = [f"img/a/{k}.jpg id_00000007 {s}" for k, s in enumerate(["train", "query", "gallery"])]
    write_text(part, "3\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n")
    with pytest.raises(EifError, match=r"1 item ids are in both train and query/gallery \(e\.g\. id_0+7\)"):
        build_data(cfg)
    write_text(part, "2\nimage_name item_id evaluation_status\nimg/a.jpg id_1 train\nimg/b.jpg id_2 query\n")
    with pytest.raises(EifError, match="the gallery split is empty"):
        build_data(cfg)


def test_imagefolder_fraction_and_lists(tmp_path) -> None:
    make_imagefolder(tmp_path)
    base = {"name": "imagefolder", "root": str(tmp_path), "train_classes": None, "test_classes": None}
    b = build_data(_cfg({**base, "train_fraction": 0.5}, fraction=0.0))
    assert b.train_class_names == ["ant", "bee", "cat"] and b.test_class_names == ["dog", "eel", "fox"]
    assert (len(b.train), len(b.test)) == (9, 9)
    np.testing.assert_array_equal(b.test.labels, np.repeat([3, 4, 5], 3))
    assert b.train.load(0).mode == "RGBA" and b.train[0][0].shape == (3, 256, 256)
    b = build_data(_cfg({**base, "train_classes": ["fox", "ant"], "test_classes": ["cat"]}))
    np.testing.assert_array_equal(b.train.labels, np.repeat([1, 0], 3))  # ant (file order) -> 1, fox -> 0
    np.testing.assert_array_equal(b.test.labels, [2, 2, 2])
    b = build_data(_cfg({**base, "test_classes": ["bee"]}))
    assert b.train_class_names == ["ant", "cat", "dog", "eel", "fox"]
    with pytest.raises(EifError, match=r"train_classes names 1 folders not in the data \(e\.g\. 'yak'\)"):
        build_data(_cfg({**base, "train_classes": ["ant", "yak"]}))
    with pytest.raises(EifError, match="dataset.train_fraction: input should be less than 1"):
        build_data(_cfg({**base, "train_fraction": 1.0}))
    with pytest.raises(EifError, match="train_fraction=0.05 of 6 classes leaves an empty"):
        build_data(_cfg({**base, "train_fraction": 0.05}))
    with pytest.raises(EifError, match=r"dataset\.root: required but not set"):
        build_data(_cfg({**base, "root": "???"}))


def test_noise_reaches_train_labels(cub_root) -> None:
    root, made = cub_root
    b = build_data(_cfg(_cub(root), fraction=0.1, rule="shift", seed=3))
    clean = made["labels"][made["labels"] < 100]
    idx = np.sort(np.random.RandomState(3).choice(199, 19, replace=False))
    np.testing.assert_array_equal(b.noise.flipped, idx)
    np.testing.assert_array_equal(b.noise.clean_labels_of_flipped, clean[idx])
    np.testing.assert_array_equal(b.train.clean_labels, clean)
    assert (b.train.labels != clean).sum() == 19 and (b.noise.fraction, b.noise.rule) == (0.1, "shift")
    shifted = np.where(clean[idx] + 5 > 99, clean[idx] - 5, clean[idx] + 5)
    np.testing.assert_array_equal(b.train.labels[idx], shifted)
    assert b.train[int(idx[0])][1] == shifted[0]
    np.testing.assert_array_equal(b.test.labels, b.test.clean_labels)


def test_unknown_dataset_class() -> None:
    with pytest.raises(EifError, match=r"dataset: cannot import _target_ 'eif\.data\.mnist\.Nope'"):
        build_data(_cfg({"name": "mnist", "root": "x"}))
