"""Training a model from its recipe (:class:`TrainSettings`), or importing a checkpoint instead.

The ``train`` stage trains through :func:`fit`; the ``clean`` stage re-trains on corrected labels
through the same function with the same settings, so both runs follow one recipe.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from eif.data.config import BatchConfig
from eif.data.noise import NoiseConfig
from eif.data.transforms import Geometric, Normalization, compose
from eif.logging.run_logger import RunLogger
from eif.losses.base import LossConfig, MetricLoss
from eif.models.config import ModelConfig, ReferenceCheckpoint
from eif.models.embedder import Embedder
from eif.models.reference import load_reference_checkpoint
from eif.settings import Settings
from eif.training.trainer import TrainConfig, Trainer
from eif.utils.errors import EifError
from eif.utils.io import load_torch
from eif.utils.seed import seed_everything


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


def train_settings(job: Any, env: Any) -> TrainSettings:
    """The recipe of ``job``'s model: its settings plus the training split's fingerprint and the
    content hash of an imported checkpoint (``env``: the pipeline's ``Env``)."""
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
    """Load ``model.checkpoint`` (an eif ``model.pt`` or the reference's weights + proxy files) into
    ``model`` and ``loss``; returns the checkpoint's per-epoch history (empty for the reference's)."""
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
    s: TrainSettings,
    train_set: Any,
    num_classes: int,
    device: torch.device,
    logger: RunLogger,
    progress: bool,
    ckpt_dir: Path,
) -> tuple[Embedder, MetricLoss, list[dict[str, Any]]]:
    """Train a fresh model and loss on ``train_set`` (an ImageSet, eval transform; the augmentation of
    ``s`` is applied here) with the recipe and seed of ``s``; resumes from ``ckpt_dir``. ``logger`` gets the
    curves. Returns (model, loss, per-epoch history)."""
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
        device,
        ckpt_dir,
        logger,
        progress,
    )
    history = trainer.fit()
    if history is None:
        raise InterruptedError("training was stopped by a signal; its checkpoint is saved for the next run")
    return model, loss, history
