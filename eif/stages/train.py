"""Stage ``train``: train the embedding model and its loss's proxies (or import a checkpoint).

Artifacts: ``model.pt`` (model and loss state dicts, their settings with ``_target_``, the number
and names of the training classes, the per-epoch history, the device and precision it was trained
with), ``history.json``, ``noise.npz`` (indices of the mislabelled training samples and their clean
labels; empty without noise).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eif.data.config import BatchConfig
from eif.data.noise import NoiseConfig
from eif.data.transforms import Geometric, Normalization, compose
from eif.losses.base import LossConfig
from eif.models.config import ModelConfig, ReferenceCheckpoint
from eif.settings import Settings, has_auto
from eif.stages.base import Run, Stage
from eif.training.trainer import TrainConfig
from eif.utils.errors import EifError
from eif.utils.io import load_torch, read_json, save_npz, save_torch, write_json
from eif.utils.seed import seed_everything

log = logging.getLogger(__name__)


class TrainSettings(Settings):
    """What a trained model depends on. ``data``: fingerprint of the training split (images, clean
    labels, class names); ``init``: content hash of ``model.checkpoint`` (None: trained here)."""

    data: str
    init: str | None
    model: ModelConfig
    loss: LossConfig
    noise: NoiseConfig
    seed: int
    train: TrainConfig
    batch: BatchConfig
    normalization: Normalization
    augment: Geometric


def _settings(job: Any, env: Any) -> TrainSettings:
    ckpt = job.model.checkpoint
    if ckpt is None:
        init = None
    elif isinstance(ckpt, ReferenceCheckpoint):
        init = env.file_digest(ckpt.weights) + "+" + env.file_digest(ckpt.proxies)
    else:
        init = env.file_digest(ckpt)
    return TrainSettings(
        data=env.fingerprints("train")["train"],
        init=init,
        model=job.model,
        loss=job.loss,
        noise=job.noise,
        seed=job.seed,
        train=job.train,
        batch=job.dataset.batch,
        normalization=job.dataset.transforms.normalization,
        augment=job.dataset.transforms.train,
    )


def _check(job: Any) -> None:
    t, m, tf = job.train, job.model, job.dataset.transforms
    if m.checkpoint is None and m.trunk_trains and t.warmup_epochs >= t.epochs:
        raise EifError(
            f"train.warmup_epochs={t.warmup_epochs} must be smaller than train.epochs={t.epochs}: "
            "warm-up freezes the trunk, so the trunk would never train"
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


def state_mismatch(module: torch.nn.Module, state: dict[str, Any]) -> str | None:
    """What keeps ``state`` from loading into ``module`` (missing, unexpected, wrong shapes), or None."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and v.shape != own[k].shape
    ]
    parts = [
        f"{what} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        if items
    ]
    return "; ".join(parts) or None


def import_checkpoint(spec: str | ReferenceCheckpoint, model: Any, loss: Any, num_classes: int) -> list:
    """Load ``model.checkpoint`` (an eif ``model.pt`` or the reference's weights + proxy files)."""
    from eif.models.reference import load_reference_checkpoint

    if isinstance(spec, ReferenceCheckpoint):
        load_reference_checkpoint(Path(spec.weights), Path(spec.proxies), model, loss)
        return []
    path = Path(spec)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols; the error says enough
            warnings.simplefilter("ignore")
            ck = load_torch(path)
    except FileNotFoundError:
        raise EifError(f"model.checkpoint {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - unpickling, zip and weights_only errors are the same user error
        # torch names the offending global ("Unsupported global: GLOBAL argparse.Namespace ...") only when
        # the file is a real checkpoint that pickles objects; garbage fails earlier in the unpickler
        kind = "pickles Python objects" if "GLOBAL" in str(err) else "is not a readable torch file"
        raise EifError(
            f"model.checkpoint {path} {kind}; eif loads plain tensors only (torch.load(weights_only=True)): "
            "save the state_dicts of an eif model.pt"
        ) from None
    if not isinstance(ck, dict) or "model" not in ck or "loss" not in ck:
        raise EifError(f"model.checkpoint {path} is not an eif model.pt (expected keys 'model' and 'loss')")
    if int(ck.get("num_classes", -1)) != num_classes:
        raise EifError(
            f"model.checkpoint {path} was trained with {ck.get('num_classes')} classes, "
            f"this config has {num_classes}"
        )
    for what, module, state in (
        ("model", model, model.importable_state(ck["model"])),
        ("loss", loss, ck["loss"]),
    ):
        problem = state_mismatch(module, state)
        if problem:
            raise EifError(f"model.checkpoint {path} does not match the configured {what}: {problem}")
        module.load_state_dict(state)
    return list(ck.get("history", []))


def fit(
    s: TrainSettings, train_set: Any, num_classes: int, run: Run, ckpt_dir: Path
) -> tuple[torch.nn.Module, torch.nn.Module, list[dict[str, Any]]]:
    """Train a fresh model and loss on ``train_set`` (an ImageSet, eval transform; the augmentation of
    ``s`` is applied here) with the recipe and seed of ``s``; resumes from ``ckpt_dir``. Returns (model,
    loss, per-epoch history). The ``clean`` stage re-trains on corrected labels through this too."""
    from eif.training.trainer import Trainer

    seed_everything(s.seed)
    model = s.model.build(pretrained=s.model.pretrained and s.init is None)
    loss = s.loss.build(num_classes, s.model.embedding_size)
    trainer = Trainer(
        model,
        loss,
        train_set.with_transform(compose(s.normalization, s.augment)),
        s.train,
        s.batch,
        s.seed,
        run.device,
        ckpt_dir,
        run.logger,
        run.progress,
    )
    history = trainer.fit()
    if history is None:
        raise InterruptedError("training was stopped by a signal; its checkpoint is saved for the next run")
    return model, loss, history


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
        model, loss, history = fit(s, data.train, data.num_train_classes, run, out / "ckpt")
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
    settings=_settings,
    compute=_compute,
    publish=_publish,
    config=("train", TrainConfig),
    check=_check,
)
