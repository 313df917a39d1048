"""``dataset=dataframe``: open-metric-learning's table format, on tables written by tests/fixtures.py.

The reader is checked against the generator (splits, labels, query/gallery membership, crops, class
names), every malformed table is one line, and the real pipeline runs train -> influence on a table
with Recall@K computed query -> gallery as its flags say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from eif.data import build_data
from eif.data.base import CroppedFileImageSet, DataBundle
from eif.evaluation.metrics import recall_at_k, recall_at_k_query_gallery
from eif.pipeline import plan_keys, run_job
from eif.utils.errors import EifError
from eif.utils.io import read_json, write_bytes, write_text
from tests.conftest import compose_cfg
from tests.fixtures import make_oml_csv

IMAGENET = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "transforms" / "imagenet.yaml")

# The real config on a generated table: the small CNN on 16x16 crops, one epoch, tiny batches.
TINY_OML = [
    "dataset=dataframe",
    "model=small_cnn",
    "model.in_channels=3",
    "dataset.transforms.train={name: random_resized_crop, size: 16, scale: [0.5, 1.0]}",
    "dataset.transforms.eval={name: resize_center_crop, resize: 16, crop: 16}",
    "dataset.transforms.influence={name: resize, resize: 16}",
    "dataset.batch.classes_per_batch=2",
    "dataset.batch.samples_per_class=2",
    "evaluate.recall_at=[1,2]",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "logger=none",
    "device=cpu",
]


def _cfg(root: Path, **dataset: Any) -> DictConfig:
    """A bare ``dataset``/``noise``/``seed`` config for :func:`build_data`."""
    node = {
        "_target_": "eif.data.dataframe.Dataframe",
        "name": "dataframe",
        "root": str(root),
        "noise_rule": "uniform",
        "batch": {"classes_per_batch": 2, "samples_per_class": 2},
        "recall_at": [1],
        "influence_transform": "influence",
        "transforms": IMAGENET,
        **dataset,
    }
    return OmegaConf.create({"seed": 0, "noise": {"fraction": 0.0, "rule": "uniform"}, "dataset": node})


def _expected_labels(made: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train labels (rank of the sorted train label values) and test labels (C + rank) of every row."""
    train, val = made["split"] == "train", made["split"] == "validation"
    train_values = np.unique(made["label"][train])
    test_values = np.unique(made["label"][val])
    labels = np.full(made["label"].size, -1)
    labels[train] = np.searchsorted(train_values, made["label"][train])
    labels[val] = train_values.size + np.searchsorted(test_values, made["label"][val])
    return labels, train_values, test_values, val


def test_separate_flags_give_query_and_gallery_sets(tmp_path: Path) -> None:
    made = make_oml_csv(tmp_path, flags="separate", category=True)
    b = build_data(_cfg(tmp_path))
    labels, train_values, test_values, val = _expected_labels(made)
    train = made["split"] == "train"
    query, gallery = val & made["is_query"], val & made["is_gallery"]
    assert not (query & gallery).any() and (query | gallery)[val].all()
    assert b.train.paths == made["path"][train].tolist()
    np.testing.assert_array_equal(b.train.labels, labels[train])
    assert b.num_train_classes == train_values.size == 4 and b.train.labels.max() == 3
    assert b.query is not None and b.gallery is not None
    assert b.query.paths == made["path"][query].tolist()
    assert b.gallery.paths == made["path"][gallery].tolist()
    assert b.test.paths == b.query.paths + b.gallery.paths  # the pooled test set: query, then gallery
    np.testing.assert_array_equal(b.query.labels, labels[query])
    np.testing.assert_array_equal(b.gallery.labels, labels[gallery])
    np.testing.assert_array_equal(b.test.labels, np.concatenate([labels[query], labels[gallery]]))
    assert b.test.labels.min() == b.num_train_classes  # test labels never collide with train labels
    cat = dict(zip(made["label"].tolist(), made["category"].tolist()))
    assert b.train_class_names == [f"{cat[v]}/{v}" for v in train_values.tolist()]
    assert b.test_class_names == [f"{cat[v]}/{v}" for v in test_values.tolist()]
    assert b.train.root == tmp_path and b.train.file(0) == tmp_path / made["path"][0]
    assert not isinstance(b.train, CroppedFileImageSet)
    assert b.train[0][0].shape == (3, 256, 256)


def test_flags_both_pool_the_validation_rows(tmp_path: Path) -> None:
    made = make_oml_csv(tmp_path, flags="both")
    b = build_data(_cfg(tmp_path))
    labels, _, test_values, val = _expected_labels(made)
    assert (made["is_query"] & made["is_gallery"])[val].all()
    assert b.query is None and b.gallery is None  # evaluated leave-one-out, as OML does
    assert b.test.paths == made["path"][val].tolist()
    np.testing.assert_array_equal(b.test.labels, labels[val])
    assert b.test_class_names == [str(v) for v in test_values.tolist()]


def test_flags_mixed_are_refused(tmp_path: Path) -> None:
    make_oml_csv(tmp_path, flags="mixed")
    with pytest.raises(
        EifError, match=r"marks 3 validation rows as both query and gallery and 9 as only one"
    ):
        build_data(_cfg(tmp_path))


def test_bounding_boxes_crop_on_load(tmp_path: Path) -> None:
    made = make_oml_csv(tmp_path, flags="both", bboxes=True)
    b = build_data(_cfg(tmp_path))
    assert isinstance(b.train, CroppedFileImageSet) and isinstance(b.test, CroppedFileImageSet)
    rows = np.flatnonzero(made["split"] == "train")
    assert (made["box"][rows, 0] < 0).any() and (made["box"][rows, 0] >= 0).any()
    for i, row in enumerate(rows):
        with Image.open(tmp_path / made["path"][row]) as im:
            whole = im.convert("RGB")
        box = made["box"][row]
        want = whole if box[0] < 0 else whole.crop(tuple(box.tolist()))
        got = b.train.load(i)
        assert got.size == want.size and np.array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(b.test.boxes, made["box"][made["split"] == "validation"])


def test_a_box_past_the_edge_is_clipped_and_one_outside_is_refused(tmp_path: Path) -> None:
    made = make_oml_csv(tmp_path, flags="both", bboxes=True)
    table = pd.read_csv(tmp_path / "df.csv")
    table.loc[0, ["x_1", "y_1", "x_2", "y_2"]] = [4, 3, 500, 400]
    write_text(tmp_path / "df.csv", table.to_csv(index=False))
    b = build_data(_cfg(tmp_path))
    with Image.open(tmp_path / made["path"][0]) as im:
        w, h = im.size
    assert b.train.load(0).size == (w - 4, h - 3)
    # A box that misses the image is found with the image checks, before anything runs.
    table.loc[0, ["x_1", "x_2"]] = [300, 310]
    write_text(tmp_path / "df.csv", table.to_csv(index=False))
    cfg = compose_cfg(tmp_path, [*TINY_OML, f"dataset.root={tmp_path}"], tiny=False)
    with pytest.raises(EifError, match=r"images/10/00\.jpg \(bounding box \(300, 3, 310, 400\) outside the"):
        plan_keys(cfg, cache_dir=tmp_path / "cache")


def test_a_changed_box_changes_the_keys(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_oml_csv(root, flags="separate", bboxes=True)
    cfg = compose_cfg(tmp_path, [*TINY_OML, f"dataset.root={root}"], tiny=False)
    before = plan_keys(cfg, ["train", "evaluate"], cache_dir=tmp_path / "cache")
    table = pd.read_csv(root / "df.csv")
    train_row = int(np.flatnonzero((table["split"] == "train") & table["x_1"].notna())[0])
    table.loc[train_row, "x_2"] += 1
    write_text(root / "df.csv", table.to_csv(index=False))
    after = plan_keys(cfg, ["train", "evaluate"], cache_dir=tmp_path / "cache")
    assert after["train"] != before["train"] and after["evaluate"] != before["evaluate"]


def test_csv_option_absolute_paths_and_labels_in_both_splits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = make_oml_csv(tmp_path / "data", flags="both", csv="df_with_bboxes.csv")
    table = pd.read_csv(tmp_path / "data" / "df_with_bboxes.csv")
    # OML's CUB and Cars tables keep the official per-image split: a label in train and validation.
    shared = int(table.loc[table["split"] == "train", "label"].iloc[0])
    first_val = int(np.flatnonzero(table["split"] == "validation")[0])
    table.loc[first_val, "label"] = shared
    table["path"] = [str(tmp_path / "data" / p) for p in table["path"]]  # absolute paths stay absolute
    elsewhere = tmp_path / "tables" / "oml.csv"
    write_text(elsewhere, table.to_csv(index=False))
    with caplog.at_level(logging.WARNING, logger="eif.data.dataframe"):
        b = build_data(_cfg(tmp_path / "somewhere_else", csv=str(elsewhere)))
    assert "1 of the 4 validation labels also occur in train" in caplog.text
    assert b.train.file(0) == tmp_path / "data" / made["path"][0]
    with Image.open(tmp_path / "data" / made["path"][0]) as im:
        assert b.train.load(0).size == im.size
    assert str(shared) in b.train_class_names and str(shared) in b.test_class_names
    assert b.test.labels.min() == b.num_train_classes
    relative = build_data(_cfg(tmp_path / "data", csv="df_with_bboxes.csv"))
    assert relative.train.paths == made["path"][made["split"] == "train"].tolist()


def _edit(column: str, row: int, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(table: pd.DataFrame) -> pd.DataFrame:
        table[column] = table[column].astype(object)
        table.loc[row, column] = value
        return table

    return edit


# (table edit, expected message). Row 4 is the first validation row (a query), row 0 a train row.
BAD_TABLES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "missing column": (
        lambda t: t.drop(columns=["is_gallery"]),
        r"lacks the column\(s\) is_gallery; expected",
    ),
    "bad split": (
        _edit("split", 2, "test"),
        r"line 4: split must be train or validation \(got 'test'; 1 such",
    ),
    "text label": (_edit("label", 1, "cat"), r"line 3: label must be an integer \(got 'cat'"),
    "float label": (_edit("label", 1, "2.5"), r"line 3: label must be an integer"),
    "empty path": (_edit("path", 3, None), r"line 5: path is empty \(got ''; 1 such row\)"),
    "bad flag": (_edit("is_query", 4, "maybe"), r"line 6: is_query must be True or False on validation rows"),
    "neither flag": (_edit("is_query", 4, False), r"line 6: a validation row must be query, gallery or both"),
    "no validation": (lambda t: t[t["split"] == "train"], r"has no validation rows; eif needs both splits"),
    "no train": (lambda t: t[t["split"] == "validation"], r"has no train rows"),
    "query without gallery": (
        lambda t: t[~((t["label"] == 28) & t["is_gallery"].eq(True))],
        r"1 query labels have no gallery image \(e\.g\. 28\)",
    ),
    "three box columns": (
        lambda t: t.drop(columns=["y_2"]),
        r"has bounding box columns x_1, y_1, x_2 but not y_2",
    ),
    "x1 not below x2": (_edit("x_1", 0, 99), r"line 2: x_1 must be smaller than x_2"),
    "negative": (_edit("y_1", 1, -2), r"line 3: y_1 must not be negative"),
    "fraction": (_edit("x_2", 1, 7.5), r"line 3: x_2 must be a whole number of pixels"),
    "not a number": (_edit("x_2", 1, "wide"), r"line 3: x_2 must be a whole number of pixels \(got 'wide'"),
    "part of a box": (_edit("y_2", 0, None), r"line 2: a bounding box needs all of x_1, x_2, y_1, y_2"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_malformed_tables_are_one_line_errors(tmp_path: Path, case: str) -> None:
    make_oml_csv(tmp_path, flags="separate", bboxes=True)
    edit, message = BAD_TABLES[case]
    table = edit(pd.read_csv(tmp_path / "df.csv"))
    write_text(tmp_path / "df.csv", table.to_csv(index=False))
    with pytest.raises(EifError, match=message) as err:
        build_data(_cfg(tmp_path))
    assert "\n" not in str(err.value) and str(err.value).startswith("dataframe: ")


def test_missing_or_unreadable_table_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(EifError, match=r"dataframe: .*df\.csv not found; expected an OML table with columns"):
        build_data(_cfg(tmp_path))
    write_bytes(tmp_path / "df.csv", b"")
    with pytest.raises(EifError, match=r"dataframe: cannot read .*df\.csv as CSV"):
        build_data(_cfg(tmp_path))
    write_text(tmp_path / "df.csv", "label,path,split,is_query,is_gallery\n")
    with pytest.raises(EifError, match=r"df\.csv has no rows"):
        build_data(_cfg(tmp_path))


def test_the_config_composes_with_resnet50_defaults(tmp_path: Path) -> None:
    made = make_oml_csv(tmp_path, flags="both")
    cfg = compose_cfg(tmp_path, ["dataset=dataframe", f"dataset.root={tmp_path}"], tiny=False)
    assert cfg.model.name == "resnet50" and cfg.dataset.csv == "df.csv"
    assert cfg.dataset.transforms.eval == {"name": "resize_center_crop", "resize": 288, "crop": 256}
    b: DataBundle = build_data(cfg)
    assert len(b.train) == int((made["split"] == "train").sum()) and b.train[0][0].shape == (3, 256, 256)


def _run(tmp_path: Path, root: Path, extra: list[str]) -> tuple[dict[str, Any], Path]:
    cfg = compose_cfg(tmp_path, [*TINY_OML, f"dataset.root={root}", *extra], tiny=False)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return run_job(cfg), Path(cfg.paths.output_dir) / "artifacts"


def test_pipeline_runs_train_to_influence_with_recall_query_to_gallery(tmp_path: Path) -> None:
    root = tmp_path / "data"
    made = make_oml_csv(root, flags="separate", bboxes=True, category=True)
    stages = ["train", "evaluate", "embed", "mine", "influence"]
    record, artifacts = _run(tmp_path, root, [f"stages=[{','.join(stages)}]", "embed.transform=eval"])
    assert set(record["compute_seconds"]) == set(stages)
    embed = artifacts / "embed"
    info = read_json(embed / "embed.json")
    labels, _, _, val = _expected_labels(made)
    query, gallery = val & made["is_query"], val & made["is_gallery"]
    assert info["paths"]["query"] == made["path"][query].tolist()
    assert info["paths"]["gallery"] == made["path"][gallery].tolist()
    assert info["paths"]["test"] == info["paths"]["query"] + info["paths"]["gallery"]
    assert info["test_class_names"][0].startswith(("bags/", "shoes/"))
    q, g = np.load(embed / "query.npz"), np.load(embed / "gallery.npz")
    np.testing.assert_array_equal(q["labels"], labels[query])
    np.testing.assert_array_equal(g["labels"], labels[gallery])
    metrics = read_json(artifacts / "evaluate" / "metrics.json")
    direct = recall_at_k_query_gallery(q["embeddings"], q["labels"], g["embeddings"], g["labels"], [1, 2])
    assert metrics["recall@1"] == pytest.approx(direct[1]) and metrics["recall@2"] == pytest.approx(direct[2])
    influence = read_json(artifacts / "influence" / "influence.json")
    assert {a["method"] for a in influence["analyses"]} == {"eif", "if"}
    assert all(a["num_confusions"] > 0 for a in influence["analyses"])


def test_pipeline_evaluates_flags_both_leave_one_out(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_oml_csv(root, flags="both")
    record, artifacts = _run(tmp_path, root, ["stages=[train,evaluate,embed]", "embed.transform=eval"])
    assert set(record["compute_seconds"]) == {"train", "evaluate", "embed"}
    assert not (artifacts / "embed" / "query.npz").exists()
    test = np.load(artifacts / "embed" / "test.npz")
    metrics = read_json(artifacts / "evaluate" / "metrics.json")
    direct = recall_at_k(test["embeddings"], test["labels"], [1, 2])  # each image against all others
    assert metrics["recall@1"] == pytest.approx(direct[1]) and metrics["recall@2"] == pytest.approx(direct[2])
