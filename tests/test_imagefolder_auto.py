"""``dataset=imagefolder dataset.root=DIR`` works first time: channels, normalisation, image size and the
batch are picked from the images (``auto`` settings, :mod:`eif.data.auto`), the model is the small CNN,
and the class folder names name the classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import open_dict

from eif.config import load_job
from eif.data.auto import MAX_SIZE, batch_for, geometry, imagenet_preset, pixel_stats
from eif.data.base import ArrayImageSet
from eif.data.config import BatchConfig
from eif.pipeline import Env, run_job
from eif.utils.errors import EifError
from eif.utils.io import read_json
from tests.conftest import compose_cfg
from tests.fixtures import make_gray_folder, make_imagefolder

CLASSES = ("ant", "bee", "cat", "dog", "eel", "fox")


def test_grayscale_folder_runs_train_to_report_with_no_other_overrides(tmp_path: Path) -> None:
    make_gray_folder(tmp_path / "photos", CLASSES, per_class=30)
    overrides = [
        "dataset=imagefolder",
        f"dataset.root={tmp_path / 'photos'}",
        # test plumbing and run time only: no logger, the CPU, fewer epochs
        "logger=none",
        "device=cpu",
        "train.epochs=4",
        "train.warmup_epochs=1",
        "stages=[train,evaluate,embed,mine,influence,survey,report]",
    ]
    record = run_job(compose_cfg(tmp_path, overrides, tiny=False))
    assert set(record["compute_seconds"]) >= {"train", "evaluate", "embed", "mine", "influence"}
    picked = record["resolved"]
    assert picked["dataset.transforms.to_rgb"] is False and picked["model.in_channels"] == 1
    assert len(picked["dataset.transforms.mean"]) == 1 and 0.3 < picked["dataset.transforms.mean"][0] < 0.6
    assert picked["dataset.transforms.eval"] == {"name": "none"}  # every image is 28x28
    assert picked["dataset.transforms.train"]["size"] == 28
    assert (picked["dataset.batch.classes_per_batch"], picked["dataset.batch.samples_per_class"]) == (3, 7)
    assert record["config"]["model"]["_target_"] == "eif.models.small_cnn.SmallCnn"
    info = read_json(Path(record["artifacts"]["embed"]) / "embed.json")
    assert info["train_class_names"] == ["ant", "bee", "cat"] and info["test_class_names"] == [
        "dog",
        "eel",
        "fox",
    ]
    classes = pd.read_csv(Path(record["artifacts"]["survey"]) / "classes.csv")
    assert classes["name"].tolist() == ["ant", "bee", "cat"]
    metrics = read_json(Path(record["artifacts"]["evaluate"]) / "metrics.json")
    assert metrics["recall@1"] > 1 / 3  # better than chance among 3 test classes
    page = (tmp_path / "run" / "report.html").read_text()
    assert any(f"{name}/" in page for name in ("dog", "eel", "fox"))  # test images named by their folder


def test_rgb_and_mixed_folders_convert_to_rgb(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "mixed", per_class=4)  # RGB, RGBA and grayscale images of varying size
    cfg = compose_cfg(
        tmp_path, ["dataset=imagefolder", f"dataset.root={tmp_path / 'mixed'}", "logger=none"], tiny=False
    )
    env = Env(load_job(cfg), tmp_path / "cache")
    tf = env.job.dataset.transforms
    assert tf.to_rgb is True and len(tf.mean) == 3 and env.job.model.in_channels == 3
    assert tf.eval.name == "resize_center_crop" and tf.influence.name == "resize"


def test_pretrained_model_takes_the_imagenet_preset(tmp_path: Path) -> None:
    make_gray_folder(tmp_path / "photos", CLASSES[:4], per_class=5)
    cfg = compose_cfg(
        tmp_path,
        ["dataset=imagefolder", f"dataset.root={tmp_path / 'photos'}", "model=resnet50", "logger=none"],
        tiny=False,
    )
    with open_dict(cfg):
        cfg.dataset.transforms.mean = [0.5]  # a value given stays: only auto settings are picked
        cfg.dataset.transforms.std = [0.25]
    job = Env(load_job(cfg), tmp_path / "cache").job
    tf, preset = job.dataset.transforms, imagenet_preset()
    assert (tf.mean, tf.std, tf.to_rgb) == ((0.5,), (0.25,), True)
    assert (tf.train, tf.eval, tf.influence) == (preset.train, preset.eval, preset.influence)
    assert job.model.in_channels == 3


def test_batch_from_the_class_sizes() -> None:
    auto = BatchConfig(classes_per_batch="auto", samples_per_class="auto")
    assert batch_for(auto, np.repeat(np.arange(5), 1000)) == BatchConfig(
        classes_per_batch=5, samples_per_class=8
    )
    assert batch_for(auto, np.repeat(np.arange(100), 30)) == BatchConfig(
        classes_per_batch=8, samples_per_class=7
    )
    assert batch_for(auto, np.repeat(np.arange(3), 3)) == BatchConfig(
        classes_per_batch=3, samples_per_class=2
    )
    assert batch_for(auto, np.repeat(np.arange(2), 2)) == BatchConfig(
        classes_per_batch=2, samples_per_class=1
    )
    given = BatchConfig(classes_per_batch=4, samples_per_class="auto")
    assert batch_for(given, np.repeat(np.arange(6), 40)).classes_per_batch == 4
    with pytest.raises(EifError, match="1 class; class-balanced batches need at least 2"):
        batch_for(auto, np.zeros(10, np.int64))


def test_geometry_from_the_image_sizes() -> None:
    same = geometry([(28, 28)] * 5)
    assert same["eval"] == {"name": "none"} and same["train"]["size"] == 28
    varied = geometry([(20, 30), (40, 24), (64, 64)])
    assert varied["eval"] == {"name": "resize_center_crop", "resize": 24, "crop": 24}
    assert varied["influence"] == {"name": "resize", "resize": 24}
    assert geometry([(500, 375)] * 3)["eval"]["crop"] == MAX_SIZE
    assert geometry([(4, 4)] * 3)["eval"]["crop"] == 8  # the small CNN needs 8x8


def test_pixel_stats_are_the_pixel_mean_and_std() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 10, 12), dtype=np.uint8)
    mean, std = pixel_stats(ArrayImageSet(pixels, np.zeros(6)), list(range(6)), 1)
    assert mean == [round(float(pixels.mean() / 255), 4)] and std == [round(float(pixels.std() / 255), 4)]
