"""Resuming training is all or nothing: a checkpoint whose last state does not load leaves the live
model, loss and optimisers exactly as they were (a fresh start), never half-loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eif.config import load_job
from eif.data.base import ArrayImageSet
from eif.logging.run_logger import RunLogger
from eif.training.trainer import Trainer
from eif.utils.io import load_checked, save_checked
from tests.conftest import compose_cfg


def small_trainer(tmp_path: Path, ckpt_dir: Path, overrides: tuple[str, ...] = ()) -> Trainer:
    """The small CNN on 100 random 28x28 images (5 classes), 2 epochs (1 warm-up), saving to ``ckpt_dir``."""
    job = load_job(compose_cfg(tmp_path, ["train.epochs=2", "train.warmup_epochs=1", *overrides]))
    rng = np.random.default_rng(0)
    images = ArrayImageSet(
        rng.integers(0, 256, size=(100, 28, 28), dtype=np.uint8),
        np.arange(100) % 5,
        job.dataset.transforms.build("train"),
    )
    torch.manual_seed(0)
    model = job.model.model_copy(update={"in_channels": 1}).build(pretrained=False)
    loss = job.loss.build(5, job.model.embedding_size)
    return Trainer(
        model, loss, images, job.train, job.dataset.batch, 0, torch.device("cpu"), ckpt_dir, RunLogger()
    )


def test_a_checkpoint_whose_last_state_fails_leaves_a_fresh_model(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    trained = small_trainer(tmp_path, ckpt_dir)
    assert trained.fit() is not None
    (newest,) = trained.checkpoints()[:1]
    ck = load_checked(newest)
    ck["opt_main"] = {
        "state": {},
        "param_groups": [],
    }  # model, loss and warm-up optimiser load; this does not
    save_checked(newest, ck)
    for older in trained.checkpoints()[1:]:
        older.unlink()

    fresh = small_trainer(tmp_path, ckpt_dir)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    proxies = {k: v.clone() for k, v in fresh.loss.state_dict().items()}
    assert not fresh.try_resume()
    assert fresh.state.epoch == 0 and fresh.state.batch == 0
    assert all(torch.equal(v, before[k]) for k, v in fresh.model.state_dict().items())
    assert all(torch.equal(v, proxies[k]) for k, v in fresh.loss.state_dict().items())
    assert not any(torch.equal(ck["model"][k], before[k]) for k in ("head.weight",))  # it had trained weights
    assert fresh.opt_main.state_dict()["state"] == {} and fresh.opt_warm.state_dict()["state"] == {}
