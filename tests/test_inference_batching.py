"""Batched inference of variable-size images equals batch-1 inference, in dataset order.

A small image folder of mixed sizes (some sharing their size after the uncropped ``resize``
transform, some not; crop boxes too) goes through the small CNN at batch size 1 and batched by size,
directly and through the embed stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eif.config import load_job
from eif.data.base import ArrayImageSet, CroppedFileImageSet, FileImageSet
from eif.data.transforms import NoGeometric, Normalization, Resize, ResizeCenterCrop, compose
from eif.models.small_cnn import build_small_cnn
from eif.pipeline import Env, run_job
from eif.training.inference import equal_size_batches, predict, stored_sizes, transformed_sizes
from eif.training.trained import load_trained
from eif.utils.io import read_json
from tests.conftest import compose_cfg
from tests.fixtures import make_imagefolder, write_image

# (w, h): 40x30, 41x30, 60x45 and 80x60 become 32x24 after Resize(24) (the long side is truncated);
# 30x40 is the transpose; 24x24 and 48x48 become 24x24; 25x24 stays alone.
SIZES = [(40, 30), (30, 40), (60, 45), (41, 30), (80, 60), (24, 24), (40, 30), (48, 48), (25, 24)] * 3
NORM = Normalization(mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), to_rgb=True)


def _folder(root: Path) -> FileImageSet:
    paths = []
    for k, (w, h) in enumerate(SIZES):
        mode = "L" if k % 5 == 0 else "RGB"  # grayscale files become RGB through to_rgb
        paths.append(f"c{k % 3}/img_{k:02d}.{'png' if k % 4 == 0 else 'jpg'}")
        write_image(root / paths[-1], w, h, seed=100 + k, mode=mode)
    return FileImageSet(root, paths, np.arange(len(paths)) % 3)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_small_cnn(in_channels=3, feature_dim=32, embedding_size=8, width=4)
    for m in model.modules():  # non-trivial BatchNorm statistics: eval mode must use them per image
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> FileImageSet:
    return _folder(tmp_path_factory.mktemp("mixed"))


def test_predicted_sizes_match_the_transform(folder: FileImageSet) -> None:
    resize = Resize(name="resize", resize=24)
    ds = folder.with_transform(compose(NORM, resize))
    assert stored_sizes(folder) == SIZES
    predicted = transformed_sizes(resize, stored_sizes(folder))
    assert [tuple(ds[i][0].shape[1:][::-1]) for i in range(len(ds))] == predicted
    assert len(set(SIZES)) == 8 and len(set(predicted)) == 4
    fixed = transformed_sizes(ResizeCenterCrop(name="resize_center_crop", resize=30, crop=24), SIZES)
    assert set(fixed) == {(24, 24)}
    assert transformed_sizes(NoGeometric(name="none"), SIZES) == SIZES


def test_equal_size_batches_group_and_cut() -> None:
    keys = ["a", "b", "a", "a", "c", "b", "a"]
    assert equal_size_batches(keys, 2) == [[0, 2], [3, 6], [1, 5], [4]]
    assert sorted(i for b in equal_size_batches(keys, 3) for i in b) == list(range(len(keys)))


def test_batched_equals_batch_one_in_dataset_order(folder: FileImageSet) -> None:
    resize = Resize(name="resize", resize=24)
    ds = folder.with_transform(compose(NORM, resize))
    model, cpu = _model(), torch.device("cpu")
    one_f, one_e = predict(model, ds, 1, cpu)
    keys = transformed_sizes(resize, stored_sizes(folder))
    assert max(len(b) for b in equal_size_batches(keys, 5)) == 5  # really batched
    f, e = predict(model, ds, 5, cpu, sizes=keys)
    np.testing.assert_allclose(f, one_f, rtol=0, atol=1e-5)
    np.testing.assert_allclose(e, one_e, rtol=0, atol=1e-5)
    assert np.abs(one_f).max() > 0.1 and len(np.unique(one_f[:, 0])) == len(ds)  # not degenerate
    # a batch whose sizes were mispredicted is split by shape, not failed
    f_wrong, _ = predict(model, ds, 8, cpu, sizes=[0] * len(ds))
    np.testing.assert_allclose(f_wrong, one_f, rtol=0, atol=1e-5)
    # DataLoader workers return batches in any order; results still land at their index
    f_workers, e_workers = predict(model, ds, 4, cpu, sizes=keys, num_workers=2)
    np.testing.assert_array_equal(f_workers, predict(model, ds, 4, cpu, sizes=keys)[0])
    np.testing.assert_allclose(e_workers, one_e, rtol=0, atol=1e-5)


def test_amp_and_channels_last_change_nothing_on_cpu(folder: FileImageSet) -> None:
    resize = Resize(name="resize", resize=24)
    ds = folder.with_transform(compose(NORM, resize))
    model, cpu = _model(), torch.device("cpu")
    keys = transformed_sizes(resize, stored_sizes(folder))
    plain = predict(model, ds, 4, cpu, sizes=keys)
    fast = predict(model, ds, 4, cpu, sizes=keys, amp=True, channels_last=True)
    np.testing.assert_array_equal(fast[0], plain[0])
    np.testing.assert_array_equal(fast[1], plain[1])
    assert all(p.is_contiguous() for p in model.parameters())


def test_crop_boxes_and_arrays_give_their_sizes(folder: FileImageSet) -> None:
    n = len(folder)
    boxes = np.full((n, 4), -1, np.int64)
    boxes[1] = (2, 3, 20, 30)  # inside 30x40
    boxes[2] = (10, 5, 500, 500)  # reaches past 60x45: clipped to 50x40
    cropped = CroppedFileImageSet(folder.root, folder.paths, folder.labels, boxes)
    sizes = stored_sizes(cropped)
    assert sizes[1] == (18, 27) and sizes[2] == (50, 40) and sizes[0] == SIZES[0]
    assert [cropped.load(i).size for i in range(n)] == sizes
    # the cropped set, batched by its transformed sizes, equals batch 1 as well
    resize = Resize(name="resize", resize=24)
    ds = cropped.with_transform(compose(NORM, resize))
    model, cpu = _model(), torch.device("cpu")
    f, _ = predict(model, ds, 6, cpu, sizes=transformed_sizes(resize, sizes))
    np.testing.assert_allclose(f, predict(model, ds, 1, cpu)[0], rtol=0, atol=1e-5)
    arrays = ArrayImageSet(np.zeros((4, 28, 20), np.uint8), np.arange(4))
    assert stored_sizes(arrays) == [(20, 28)] * 4


def test_embed_stage_batches_the_uncropped_transform(tmp_path: Path) -> None:
    """The embed stage on an image folder of mixed sizes with the uncropped ``resize`` transform: the
    cached features equal batch-1 features of the trained model."""
    make_imagefolder(tmp_path / "data")  # 18 images from 8x8 to 16x12, RGB, RGBA and grayscale
    overrides = [
        "dataset=imagefolder",
        f"dataset.root={tmp_path / 'data'}",
        "model=small_cnn",
        "model.in_channels=3",
        "dataset.batch.classes_per_batch=2",
        "dataset.batch.samples_per_class=2",
        "dataset.transforms.train={name: random_resized_crop, size: 16}",
        "dataset.transforms.influence={name: resize, resize: 24}",
        "train.epochs=1",
        "train.warmup_epochs=0",
        "stages=[train,embed]",
        "embed.transform=influence",
        "embed.batch_size=4",
        "logger=none",
        "device=cpu",
    ]
    cfg = compose_cfg(tmp_path, overrides, tiny=False)
    record = run_job(cfg)
    embed = Path(record["artifacts"]["embed"])
    info = read_json(embed / "embed.json")
    model, _, _ = load_trained(Path(record["artifacts"]["train"]), torch.device("cpu"))
    tf = Env(load_job(cfg), None).job.dataset.transforms.build("influence")  # auto settings resolved
    for split in ("train", "test"):
        cached = np.load(embed / f"{split}.npz")
        ds = FileImageSet(tmp_path / "data", info["paths"][split], cached["labels"], tf)
        assert len({tuple(ds[i][0].shape) for i in range(len(ds))}) > 1  # sizes really vary
        one_f, one_e = predict(model, ds, 1, torch.device("cpu"))
        np.testing.assert_allclose(cached["features"], one_f, rtol=0, atol=1e-5)
        np.testing.assert_allclose(cached["embeddings"], one_e, rtol=0, atol=1e-5)
