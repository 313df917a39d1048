"""Loading a trained model back from a ``train`` artifact (for every stage that reads one)."""

from __future__ import annotations

from pathlib import Path

import torch

from eif.losses.base import LossConfig, MetricLoss
from eif.models.config import ModelConfig
from eif.models.embedder import Embedder
from eif.settings import parse
from eif.utils.errors import EifError
from eif.utils.io import load_torch


def load_trained(train_dir: Path, device: torch.device) -> tuple[Embedder, MetricLoss, dict]:
    """(model, loss, checkpoint dict) rebuilt from ``train_dir/model.pt`` in eval mode; no weights are
    downloaded (the trained ones are loaded)."""
    ck = load_torch(train_dir / "model.pt", map_location="cpu")
    mcfg = parse(ModelConfig, ck["model_cfg"], f"{train_dir / 'model.pt'}: model_cfg")
    model = mcfg.build(pretrained=False)
    loss = parse(LossConfig, ck["loss_cfg"], f"{train_dir / 'model.pt'}: loss_cfg").build(
        int(ck["num_classes"]), mcfg.embedding_size
    )
    try:
        model.load_state_dict(ck["model"])
        loss.load_state_dict(ck["loss"])
    except RuntimeError as err:
        raise EifError(
            f"{train_dir / 'model.pt'} does not match its own settings: {str(err).splitlines()[0]}"
        ) from err
    return model.to(device).eval(), loss.to(device).eval(), ck
