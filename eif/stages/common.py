"""Helpers shared by stages: which config values key an output, and loading a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from eif.stages.base import plain
from eif.utils.errors import EifError
from eif.utils.io import load_torch

# Dataset settings that do not change what a model learns (where the files are, how to evaluate).
_DATASET_NOT_KEYED = ("root", "download", "recall_at", "influence_transform")
# Training settings that only change speed, not results (on CPU; see README on GPU determinism).
_TRAIN_NOT_KEYED = ("num_workers", "cpu_num_workers", "pin_memory", "checkpoint_every_batches")


def without(node: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    d = plain(node)
    return {k: v for k, v in d.items() if k not in keys}


def train_fields(cfg: DictConfig) -> dict[str, Any]:
    """The config values a trained model depends on."""
    model = plain(cfg.model)
    return {
        "dataset": without(cfg.dataset, _DATASET_NOT_KEYED),
        "model": model,
        "loss": plain(cfg.loss),
        "noise": {"fraction": float(cfg.noise.fraction), "rule": str(cfg.noise.rule)},
        "seed": int(cfg.seed),
        "train": without(cfg.train, _TRAIN_NOT_KEYED),
    }


def load_trained(train_dir: Path, cfg: DictConfig, device: torch.device):
    """Rebuild (model, loss, checkpoint dict) from a train artifact; no weights are downloaded."""
    from eif.losses import build_loss
    from eif.models import build_model

    ck = load_torch(train_dir / "model.pt", map_location="cpu")
    mcfg = OmegaConf.create(ck["model_cfg"])
    mcfg.pretrained = False
    model = build_model(mcfg)
    loss = build_loss(OmegaConf.create(ck["loss_cfg"]), int(ck["num_classes"]), int(mcfg.embedding_size))
    try:
        model.load_state_dict(ck["model"])
        loss.load_state_dict(ck["loss"])
    except RuntimeError as err:
        raise EifError(
            f"{train_dir / 'model.pt'} does not match the configured model: {str(err).splitlines()[0]}"
        ) from err
    return model.to(device).eval(), loss.to(device).eval(), ck
