"""Training as in the reference protocol (docs/protocol.md, "Training").

- Class-balanced batches from :class:`~eif.data.samplers.BalancedBatchSampler`; a batch and its
  augmentations are a pure function of (seed, epoch, batch position), so a resumed run sees exactly
  the batches an uninterrupted run would. Batches are fetched whole, with one RNG fork and one
  stack per batch instead of per sample (:class:`~eif.training.batches.SeededBatches`).
- Adam (eps 1.0) with three parameter groups: trunk, head and proxies. The first
  ``warmup_epochs`` use a separate Adam instance whose trunk learning rate is 0 (the reference
  does the same; BatchNorm statistics still update).
- ``clip_grad_value_`` on the model parameters every step (the proxies are not clipped).
- On CUDA: autocast + GradScaler, channels_last, DataLoader workers and pinned memory (each
  configurable). On CPU these are off and the run is bit-reproducible.
- Checkpoints (``ckpt/e<epoch>-b<batch>.ckpt``, the newest two kept) are written atomically with a
  SHA-256 of their bytes after every epoch, every ``checkpoint_every_batches`` batches, and when a
  pre-emption or termination signal arrives. A resume verifies the checksum, loads every state into
  fresh objects and only then commits them, so a bad or foreign checkpoint never leaves a
  half-loaded model; one that fails to load for any reason (checksum, a payload that unpickling
  refuses, states that do not fit) is reported on one line and the previous one is tried.
- Finite or nothing: the first non-finite loss, embedding squared norm (distances need it finite)
  or, without amp, gradient stops training with one line naming the epoch, the batch and the likely
  cause (learning rate or input scale). Its
  checkpoints are deleted (resuming would diverge again), so the store publishes nothing and keeps
  no work directory. With amp, GradScaler's skipped steps on overflowing gradients are expected and
  only a non-finite loss stops training.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from eif.data.base import ImageSet
from eif.data.config import BatchConfig
from eif.data.samplers import BalancedBatchSampler
from eif.logging.run_logger import RunLogger
from eif.settings import SPEED, Settings, setting
from eif.training.batches import SeededBatches
from eif.utils import preempt
from eif.utils.errors import EifError
from eif.utils.io import CorruptFile, load_checked, save_checked

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
# Inputs larger than this in magnitude name the input scale, not the learning rate, as the likely cause
# of a divergence (normalised images are within about +-3; standardised features within a few tens).
LARGE_INPUT = 1e4


class Diverged(EifError):
    """Training met a non-finite loss or gradient; nothing of it is kept."""


class OptimizerConfig(Settings):
    """Adam learning rates per parameter group, eps and weight decay (values: conf/train/default.yaml)."""

    lr_trunk: NonNegativeFloat
    lr_head: NonNegativeFloat
    lr_proxies: NonNegativeFloat
    eps: PositiveFloat
    weight_decay: NonNegativeFloat


# The reference's warm-up (docs/protocol.md, "Training"); ``warmup_epochs: auto`` takes it, capped at
# epochs - 1 so that a short run still trains its trunk.
REFERENCE_WARMUP_EPOCHS = 5


class TrainConfig(Settings):
    """``train``: the training recipe (docs/protocol.md, "Training"); values: conf/train/default.yaml."""

    epochs: PositiveInt
    # Warm-up epochs run first with the trunk frozen (trunk lr 0); the head and proxies train.
    # ``auto``: min(REFERENCE_WARMUP_EPOCHS, epochs - 1), resolved when the settings are read.
    warmup_epochs: NonNegativeInt
    optimizer: OptimizerConfig
    clip_grad_value: PositiveFloat | None
    max_batches_per_epoch: PositiveInt | None
    # Mixed precision on CUDA (ignored on CPU). Keyed as set: a model trained with amp=true on a
    # CPU is the same setting's result; a checkpoint refuses a resume under another precision.
    amp: bool
    channels_last: bool = setting(unkeyed=SPEED)
    num_workers: NonNegativeInt = setting(unkeyed=SPEED)
    cpu_num_workers: NonNegativeInt = setting(unkeyed=SPEED)
    pin_memory: bool = setting(unkeyed=SPEED)
    checkpoint_every_batches: NonNegativeInt = setting(unkeyed=SPEED)

    @model_validator(mode="before")
    @classmethod
    def _auto_warmup(cls, data: Any) -> Any:
        """``warmup_epochs: auto`` -> the reference's 5 epochs, or epochs - 1 for shorter runs."""
        if isinstance(data, dict) and data.get("warmup_epochs") == "auto":
            epochs = data.get("epochs")
            if isinstance(epochs, int) and not isinstance(epochs, bool):
                return {**data, "warmup_epochs": max(0, min(REFERENCE_WARMUP_EPOCHS, epochs - 1))}
        return data


@dataclass
class TrainState:
    """Where training stands: epochs finished, batches finished in the current epoch, history."""

    epoch: int = 0
    batch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # Loss sum and batch count of the unfinished epoch, so a mid-epoch resume reports the same mean.
    partial_loss_sum: float = 0.0
    partial_batches: int = 0


def make_optimizer(
    model: nn.Module, loss: nn.Module, ocfg: OptimizerConfig, warmup: bool
) -> torch.optim.Adam:
    """Adam over trunk / head / proxies; in warm-up the trunk's learning rate is 0."""
    head = list(model.get_submodule("head").parameters())
    head_ids = {id(p) for p in head}
    trunk = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [
        {"params": trunk, "lr": 0.0 if warmup else ocfg.lr_trunk, "name": "trunk"},
        {"params": head, "lr": ocfg.lr_head, "name": "head"},
        {"params": list(loss.parameters()), "lr": ocfg.lr_proxies, "name": "proxies"},
    ]
    return torch.optim.Adam(groups, eps=ocfg.eps, weight_decay=ocfg.weight_decay)


class Trainer:
    """Train ``model`` with ``loss`` on ``train_set``; resumable from the checkpoints in ``ckpt_dir``."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        train_set: ImageSet,
        cfg: TrainConfig,
        batch: BatchConfig,
        seed: int,
        device: torch.device,
        ckpt_dir: Path,
        logger: RunLogger,
        progress: bool = False,
    ) -> None:
        self.model, self.loss, self.train_set = model, loss, train_set
        self.batches = SeededBatches(train_set)
        self.cfg, self.batch, self.seed, self.device = cfg, batch, int(seed), device
        self.ckpt_dir = Path(ckpt_dir)
        self.logger = logger
        self.progress = progress
        self.cuda = device.type == "cuda"
        self.amp = self.cuda and cfg.amp
        self.model.to(device)
        self.loss.to(device)
        if self.cuda and cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt_warm = make_optimizer(model, loss, cfg.optimizer, warmup=True)
        self.opt_main = make_optimizer(model, loss, cfg.optimizer, warmup=False)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.state = TrainState()

    @property
    def precision(self) -> str:
        return "amp" if self.amp else "fp32"

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write a checksummed checkpoint of everything training needs; keep the newest two."""
        name = f"e{self.state.epoch:04d}-b{self.state.batch:07d}.ckpt"
        save_checked(
            self.ckpt_dir / name,
            {
                "epoch": self.state.epoch,
                "batch": self.state.batch,
                "history": self.state.history,
                "partial": [self.state.partial_loss_sum, self.state.partial_batches],
                "model": self.model.state_dict(),
                "loss": self.loss.state_dict(),
                "opt_warm": self.opt_warm.state_dict(),
                "opt_main": self.opt_main.state_dict(),
                "scaler": self.scaler.state_dict(),
                "device": self.device.type,
                "precision": self.precision,
            },
        )
        for old in self.checkpoints()[KEEP_CHECKPOINTS:]:
            old.unlink(missing_ok=True)

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, newest first."""
        return sorted(self.ckpt_dir.glob("e*-b*.ckpt"), reverse=True)

    def try_resume(self) -> bool:
        """Resume from the newest good checkpoint; corrupt ones are reported and skipped."""
        for path in self.checkpoints():
            try:
                ck = load_checked(path, map_location=self.device)
            except Exception as err:  # noqa: BLE001 - any load failure (checksum, refused pickle, I/O) skips it
                why = "is corrupt" if isinstance(err, CorruptFile) else "cannot be loaded"
                first = " ".join(str(err).split())[:200] or type(err).__name__
                log.warning("training checkpoint %s %s (%s); trying the previous one", path.name, why, first)
                path.unlink(missing_ok=True)
                continue
            if not isinstance(ck, dict):
                log.warning(
                    "training checkpoint %s holds no checkpoint dict; trying the previous one", path.name
                )
                path.unlink(missing_ok=True)
                continue
            if (ck.get("device"), ck.get("precision")) != (self.device.type, self.precision):
                raise EifError(
                    f"the training checkpoint {path} was written on {ck.get('device')} with "
                    f"{ck.get('precision')}; this job runs on {self.device.type} with {self.precision}: "
                    f"re-run it there, or delete {self.ckpt_dir} to start training over"
                )
            try:
                self._restore(ck)
            except (KeyError, RuntimeError, ValueError, TypeError) as err:
                log.warning(
                    "training checkpoint %s does not fit this model (%s); trying the previous one",
                    path.name,
                    err,
                )
                continue
            log.info(
                "resuming training at epoch %d, batch %d (%s)", self.state.epoch, self.state.batch, path.name
            )
            return True
        return False

    def _diverged(self, epoch: int, batch: int, what: str, x: torch.Tensor) -> Diverged:
        """The one-line error for a non-finite ``what`` at 0-based ``epoch`` and ``batch``, after
        deleting this run's checkpoints (a resume from them would diverge the same way)."""
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        scale = float(x.detach().abs().amax()) if x.numel() else 0.0
        o = self.cfg.optimizer
        lrs = f"lr_trunk={o.lr_trunk:g}, lr_head={o.lr_head:g}, lr_proxies={o.lr_proxies:g}"
        if not math.isfinite(scale) or scale > LARGE_INPUT:
            cause = (
                f"likely cause: the input scale (inputs reach |x| = {scale:.3g}; standardise the "
                f"features or images), else the learning rates ({lrs})"
            )
        else:
            cause = (
                f"likely cause: the learning rates (train.optimizer: {lrs}; inputs reach |x| = {scale:.3g})"
            )
        return Diverged(
            f"training diverged at epoch {epoch + 1}, batch {batch + 1}: {what}; {cause}. "
            "Nothing was published"
        )

    def _restore(self, ck: dict[str, Any]) -> None:
        """Load every state into fresh copies first; commit to the live objects only if all loaded."""
        model, loss = copy.deepcopy(self.model), copy.deepcopy(self.loss)
        warm = make_optimizer(model, loss, self.cfg.optimizer, warmup=True)
        main = make_optimizer(model, loss, self.cfg.optimizer, warmup=False)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        model.load_state_dict(ck["model"])
        loss.load_state_dict(ck["loss"])
        warm.load_state_dict(ck["opt_warm"])
        main.load_state_dict(ck["opt_main"])
        scaler.load_state_dict(ck["scaler"])
        state = TrainState(
            epoch=int(ck["epoch"]),
            batch=int(ck["batch"]),
            history=list(ck["history"]),
            partial_loss_sum=float(ck["partial"][0]),
            partial_batches=int(ck["partial"][1]),
        )
        # All loaded: the same states into the live objects cannot fail now.
        self.model.load_state_dict(model.state_dict())
        self.loss.load_state_dict(loss.state_dict())
        self.opt_warm.load_state_dict(warm.state_dict())
        self.opt_main.load_state_dict(main.state_dict())
        self.scaler.load_state_dict(scaler.state_dict())
        self.state = state

    # ------------------------------------------------------------------ loop
    def _loader(self, epoch: int, start_batch: int) -> tuple[DataLoader, int]:
        """Batches ``start_batch, ...`` of ``epoch`` as ``(x, y)``, and the index at which the epoch ends."""
        sampler = BalancedBatchSampler(
            self.train_set.labels,
            self.batch.classes_per_batch,
            self.batch.samples_per_class,
            seed=self.seed,
            epoch=epoch,
            start_batch=start_batch,
        )
        workers = self.cfg.num_workers if self.cuda else self.cfg.cpu_num_workers
        loader = DataLoader(
            self.batches,
            sampler=sampler,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.cuda and self.cfg.pin_memory,
            persistent_workers=False,
            worker_init_fn=preempt.ignore_signals_in_worker,
        )
        total = len(sampler) + start_batch
        limit = self.cfg.max_batches_per_epoch
        return loader, total if limit is None else min(total, limit)

    def fit(self) -> list[dict[str, float]] | None:
        """Run (or finish) all epochs; the per-epoch history, or None when a signal stopped training
        (a checkpoint was written first)."""
        self.try_resume()
        epochs, warm = self.cfg.epochs, self.cfg.warmup_epochs
        while self.state.epoch < epochs:
            epoch = self.state.epoch
            opt = self.opt_warm if epoch < warm else self.opt_main
            stats = self._run_epoch(epoch, opt, warmup=epoch < warm)
            if stats is None:  # stopped by a signal: the checkpoint is on disk
                preempt.acknowledge()
                return None
            self.state.history.append(stats)
            self.state = TrainState(epoch=epoch + 1, history=self.state.history)
            self.save()
            self.logger.log({f"train/{k}": v for k, v in stats.items()}, step=epoch + 1)
        return self.state.history

    def _run_epoch(self, epoch: int, opt: torch.optim.Optimizer, warmup: bool) -> dict[str, float] | None:
        self.model.train()
        start = self.state.batch
        loader, total = self._loader(epoch, start)
        clip = self.cfg.clip_grad_value
        every = self.cfg.checkpoint_every_batches
        loss_sum, n_batches = self.state.partial_loss_sum, self.state.partial_batches
        n_images, t0 = 0, time.perf_counter()
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}" + (" (warm-up)" if warmup else ""),
            leave=False,
            dynamic_ncols=True,
            disable=not self.progress,
        )
        for i, (x, y) in zip(range(start, total), loader):  # range first: no batch past `total` is fetched
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.cuda and self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", enabled=self.amp):
                z = self.model(x)
            value = self.loss(z.float(), y)
            # One host sync for both: the loss, and the largest squared embedding norm, which must stay
            # finite for any distance to be (a loss on normalised embeddings stays finite past that).
            loss_value, sq_norm = torch.stack(
                [value.detach().float(), z.detach().float().square().sum(1).amax()]
            )
            loss_value, sq_norm = float(loss_value), float(sq_norm)
            if not math.isfinite(loss_value):
                bar.close()
                raise self._diverged(epoch, i, f"the loss is {loss_value}", x)
            if not math.isfinite(sq_norm):
                bar.close()
                raise self._diverged(epoch, i, "the embeddings' squared norms overflow float32", x)
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(value).backward()
            if not self.amp:  # with amp, GradScaler skips steps whose gradients overflow, by design
                bad = _non_finite_grads(opt)
                if bad:
                    bar.close()
                    raise self._diverged(epoch, i, f"the gradients of {bad} are not finite", x)
            if clip is not None:
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_value_(self.model.parameters(), clip)
            self.scaler.step(opt)
            self.scaler.update()
            loss_sum += loss_value
            n_batches += 1
            n_images += x.shape[0]
            self.state.batch = i + 1
            if self.progress:
                rate = n_images / max(time.perf_counter() - t0, 1e-9)
                # drawn by update()'s rate-limited refreshes, not one redraw per step
                bar.set_postfix(loss=f"{loss_sum / n_batches:.4f}", img_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
            stop = preempt.requested()
            if stop or (every and (i + 1) % every == 0 and i + 1 < total):
                self.state.partial_loss_sum, self.state.partial_batches = loss_sum, n_batches
                self.save()
                if stop:
                    bar.close()
                    return None
        bar.close()
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch + 1,
            "loss": loss_sum / max(n_batches, 1),
            "batches": n_batches,
            "seconds": seconds,
            "images_per_s": n_images / max(seconds, 1e-9),
        }


def _non_finite_grads(opt: torch.optim.Optimizer) -> str:
    """The parameter groups (trunk, head, proxies) holding a NaN or infinite gradient, or ""."""
    bad = []
    for group in opt.param_groups:
        grads = [p.grad for p in group["params"] if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            bad.append(str(group.get("name", "?")))
    return ", ".join(bad)
