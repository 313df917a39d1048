"""Stage ``train``: train the embedding model and its loss's proxies (or import a checkpoint).

Artifacts: ``model.pt`` (model and loss state dicts, their settings with ``_target_``, the number
and names of the training classes, the per-epoch history, the device and precision it was trained
with), ``history.json``, ``noise.npz`` (indices of the mislabelled training samples and their clean
labels; empty without noise).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from eif.settings import has_auto
from eif.stages.base import Run, Stage
from eif.training.fit import TrainSettings, fit, import_checkpoint, train_settings
from eif.training.trainer import TrainConfig
from eif.utils.errors import EifError
from eif.utils.io import read_json, save_npz, save_torch, write_json
from eif.utils.seed import seed_everything

log = logging.getLogger(__name__)


def _check(job: Any) -> None:
    t, m, tf = job.train, job.model, job.dataset.transforms
    if m.checkpoint is None and m.trunk_trains and t.warmup_epochs >= t.epochs:
        raise EifError(
            f"train.warmup_epochs={t.warmup_epochs} must be smaller than train.epochs={t.epochs} (warm-up "
            "freezes the trunk, so the trunk would never train): add train.warmup_epochs=0 for no warm-up"
            + (f" (or up to {t.epochs - 1})" if t.epochs > 1 else "")
        )
    # auto values are checked once resolved (eif.data.auto re-runs this); None: not images
    if has_auto(m) or has_auto(tf) or tf.channels is None:
        return
    if m.in_channels != tf.channels:
        fix = (
            "dataset.transforms.to_rgb=true with 3-entry mean/std"
            if m.in_channels == 3
            else "matching mean/std"
        )
        raise EifError(
            f"model.in_channels={m.in_channels}, but dataset.transforms gives {tf.channels}-channel images "
            f"(mean/std have {tf.channels} entries): set model.in_channels={tf.channels} or use {fix}"
        )


def _compute(s: TrainSettings, run: Run, out: Path) -> None:
    data = run.data()
    device, precision = run.device.type, "amp" if run.device.type == "cuda" and s.train.amp else "fp32"
    if s.model.checkpoint is not None:
        seed_everything(s.seed)
        model = s.model.build(pretrained=s.model.pretrained and s.init is None)
        loss = s.loss.build(data.num_train_classes, s.model.embedding_size)
        history = import_checkpoint(s.model.checkpoint, model, loss, data.num_train_classes)
        device, precision = "imported", "imported"
        log.info("imported model from %s (no training)", s.model.checkpoint)
    else:
        model, loss, history = fit(
            s, data.train, data.num_train_classes, run.device, run.logger, run.progress, out / "ckpt"
        )
    model.cpu()
    loss.cpu()
    save_torch(
        out / "model.pt",
        {
            "model": model.state_dict(),
            "loss": loss.state_dict(),
            "model_cfg": s.model.dump(),
            "loss_cfg": s.loss.dump(),
            "num_classes": data.num_train_classes,
            "class_names": list(data.train_class_names),
            "history": history,
            "device": device,
            "precision": precision,
        },
    )
    write_json(out / "history.json", history)
    save_npz(
        out / "noise.npz",
        flipped=np.asarray(data.noise.flipped, dtype=np.int64),
        clean_labels=np.asarray(data.noise.clean_labels_of_flipped, dtype=np.int64),
    )


def _publish(s: TrainSettings, run: Run, out: Path) -> None:
    history = read_json(out / "history.json")
    if "train" not in run.computed:  # reused from the store: replay its curve into this run's log
        for h in history:
            run.logger.log({f"train/{k}": v for k, v in h.items()}, step=int(h["epoch"]))
    if history:
        last = history[-1]
        log.info("train: %d epochs, final loss %.4f", len(history), last["loss"])
        run.logger.summary({"train/final_loss": last["loss"], "train/epochs": len(history)})
    run.logger.artifact(f"model-{out.name}", "model", [out / "model.pt"], metadata={"store_key": out.name})


STAGE = Stage(
    name="train",
    settings=train_settings,
    compute=_compute,
    publish=_publish,
    config=("train", TrainConfig),
    check=_check,
    network=lambda job: "train",
)
