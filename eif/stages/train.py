"""Stage ``train``: train the embedding model and its loss's proxies (or import a checkpoint).

Artifacts: ``model.pt`` (model and loss state dicts, their configs, the number of classes, the
per-epoch history), ``history.json``, ``noise.npz`` (indices of the mislabelled training samples
and their clean labels; empty without noise).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from eif.stages.base import Context, Stage, plain
from eif.stages.common import train_fields
from eif.utils.errors import EifError
from eif.utils.io import load_torch, save_npz, save_torch, write_json
from eif.utils.seed import seed_everything

log = logging.getLogger(__name__)


def _fields(cfg: DictConfig) -> dict:
    return train_fields(cfg)


def import_checkpoint(spec, model, loss, num_classes: int) -> list:
    """Load ``model.checkpoint`` (an eif ``model.pt`` or the reference's weights + proxy files)."""
    from eif.models.reference import load_reference_checkpoint

    if OmegaConf.is_dict(spec) or isinstance(spec, dict):
        if "weights" not in spec or "proxies" not in spec:
            raise EifError("model.checkpoint as a mapping needs both 'weights' and 'proxies' paths")
        load_reference_checkpoint(Path(spec["weights"]), Path(spec["proxies"]), model, loss)
        return []
    path = Path(str(spec))
    if not path.is_file():
        raise EifError(f"model.checkpoint {path} does not exist")
    try:
        ck = load_torch(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise EifError(f"model.checkpoint {path} is not a readable torch checkpoint ({err})") from err
    if not isinstance(ck, dict) or "model" not in ck or "loss" not in ck:
        raise EifError(f"model.checkpoint {path} is not an eif model.pt (expected keys 'model' and 'loss')")
    if int(ck.get("num_classes", -1)) != num_classes:
        raise EifError(
            f"model.checkpoint {path} was trained with {ck.get('num_classes')} classes, "
            f"this config has {num_classes}"
        )
    try:
        model.load_state_dict(ck["model"])
        loss.load_state_dict(ck["loss"])
    except RuntimeError as err:
        raise EifError(
            f"model.checkpoint {path} does not match model={model.__class__.__name__}"
            f"/{(ck.get('model_cfg') or {}).get('name', '?')}: "
            f"{str(err).splitlines()[0]}"
        ) from err
    return list(ck.get("history", []))


def _compute(ctx: Context, out: Path) -> None:
    from eif.data.transforms import build_transform
    from eif.losses import build_loss
    from eif.models import build_model
    from eif.training.trainer import Trainer

    cfg = ctx.cfg
    data = ctx.data()
    seed_everything(int(cfg.seed))
    ckpt_spec = cfg.model.get("checkpoint")
    model = build_model(cfg.model if ckpt_spec is None else OmegaConf.merge(cfg.model, {"pretrained": False}))
    loss = build_loss(cfg.loss, data.num_train_classes, int(cfg.model.embedding_size))
    if ckpt_spec is not None:
        history = import_checkpoint(ckpt_spec, model, loss, data.num_train_classes)
        log.info("imported model from %s (no training)", plain(ckpt_spec))
    else:
        train_set = data.train.with_transform(build_transform(cfg.dataset.transforms, "train"))
        trainer = Trainer(model, loss, train_set, cfg, ctx.device, out / "ckpt", ctx.logger)
        history = trainer.fit()
        if trainer.state.epoch < int(cfg.train.epochs):
            raise InterruptedError("training was pre-empted; its checkpoint is saved for the requeued job")
    model.cpu()
    loss.cpu()
    save_torch(
        out / "model.pt",
        {
            "model": model.state_dict(),
            "loss": loss.state_dict(),
            "model_cfg": plain(cfg.model),
            "loss_cfg": plain(cfg.loss),
            "num_classes": data.num_train_classes,
            "history": history,
        },
    )
    write_json(out / "history.json", history)
    save_npz(
        out / "noise.npz",
        flipped=np.asarray(data.noise.flipped, dtype=np.int64),
        clean_labels=np.asarray(data.noise.clean_labels_of_flipped, dtype=np.int64),
    )


def _publish(ctx: Context, out: Path) -> None:
    from eif.utils.io import read_json

    history = read_json(out / "history.json")
    if "train" not in ctx.timings:  # reused from the store: replay its curve into this run's log
        for h in history:
            ctx.logger.log({f"train/{k}": v for k, v in h.items()}, step=int(h["epoch"]))
    if history:
        last = history[-1]
        log.info("train: %d epochs, final loss %.4f", len(history), last["loss"])
        ctx.logger.summary({"train/final_loss": last["loss"], "train/epochs": len(history)})
    ctx.logger.artifact(f"model-{out.name}", "model", [out / "model.pt"], metadata={"store_key": out.name})


STAGE = Stage(name="train", deps=(), fields=_fields, compute=_compute, publish=_publish)
