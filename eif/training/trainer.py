"""Training as in the reference protocol (PROTOCOL.md section 1).

- Class-balanced batches from :class:`~eif.data.samplers.BalancedBatchSampler`; a batch and its
  augmentations are a pure function of (seed, epoch, batch position), so a resumed run sees exactly
  the batches an uninterrupted run would.
- Adam (eps 1.0) with three parameter groups: trunk, head and proxies. The first
  ``warmup_epochs`` use a separate Adam instance whose trunk learning rate is 0 (the reference
  does the same; BatchNorm statistics still update).
- ``clip_grad_value_`` on the model parameters every step (the proxies are not clipped).
- On CUDA: autocast + GradScaler, channels_last, DataLoader workers and pinned memory (each
  configurable). On CPU these are off and the run is bit-reproducible.
- A checkpoint (``ckpt/last.pt``) is written atomically after every epoch, every
  ``checkpoint_every_batches`` batches, and when a SLURM pre-emption signal arrives.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from eif.data.samplers import BalancedBatchSampler
from eif.logging.run_logger import RunLogger
from eif.utils import preempt
from eif.utils.io import load_torch, save_torch

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training stands: epochs finished, batches finished in the current epoch, history."""

    epoch: int = 0
    batch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # Loss sum and batch count of the unfinished epoch, so a mid-epoch resume reports the same mean.
    partial_loss_sum: float = 0.0
    partial_batches: int = 0


def make_optimizer(model: nn.Module, loss: nn.Module, ocfg: DictConfig, warmup: bool) -> torch.optim.Adam:
    """Adam over trunk / head / proxies; in warm-up the trunk's learning rate is 0."""
    head = list(model.head.parameters())
    head_ids = {id(p) for p in head}
    trunk = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [
        {"params": trunk, "lr": 0.0 if warmup else float(ocfg.lr_trunk), "name": "trunk"},
        {"params": head, "lr": float(ocfg.lr_head), "name": "head"},
        {"params": list(loss.parameters()), "lr": float(ocfg.lr_proxies), "name": "proxies"},
    ]
    return torch.optim.Adam(groups, eps=float(ocfg.eps), weight_decay=float(ocfg.weight_decay))


class Trainer:
    """Train ``model`` with ``loss`` on ``train_set``; resumable from ``ckpt_dir/last.pt``."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        train_set: Any,
        cfg: DictConfig,
        device: torch.device,
        ckpt_dir: Path,
        logger: RunLogger,
    ) -> None:
        self.model, self.loss, self.train_set = model, loss, train_set
        self.cfg, self.tcfg, self.device = cfg, cfg.train, device
        self.ckpt_path = ckpt_dir / "last.pt"
        self.logger = logger
        self.cuda = device.type == "cuda"
        self.amp = self.cuda and bool(self.tcfg.amp)
        self.model.to(device)
        self.loss.to(device)
        if self.cuda and bool(self.tcfg.channels_last):
            self.model.to(memory_format=torch.channels_last)
        self.opt_warm = make_optimizer(model, loss, self.tcfg.optimizer, warmup=True)
        self.opt_main = make_optimizer(model, loss, self.tcfg.optimizer, warmup=False)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.state = TrainState()

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        save_torch(
            self.ckpt_path,
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
            },
        )

    def try_resume(self) -> bool:
        """Load ``last.pt`` if present; an unreadable one is discarded (training restarts)."""
        if not self.ckpt_path.exists():
            return False
        try:
            ck = load_torch(self.ckpt_path, map_location=self.device)
            self.model.load_state_dict(ck["model"])
            self.loss.load_state_dict(ck["loss"])
            self.opt_warm.load_state_dict(ck["opt_warm"])
            self.opt_main.load_state_dict(ck["opt_main"])
            self.scaler.load_state_dict(ck["scaler"])
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint means "start over"
            log.warning("ignoring unreadable checkpoint %s (%s); training from scratch", self.ckpt_path, err)
            self.ckpt_path.unlink(missing_ok=True)
            return False
        self.state = TrainState(
            epoch=int(ck["epoch"]),
            batch=int(ck["batch"]),
            history=list(ck["history"]),
            partial_loss_sum=float(ck["partial"][0]),
            partial_batches=int(ck["partial"][1]),
        )
        log.info("resuming training at epoch %d, batch %d", self.state.epoch, self.state.batch)
        return True

    # ------------------------------------------------------------------ loop
    def _loader(self, epoch: int, start_batch: int) -> tuple[DataLoader, int]:
        b = self.cfg.dataset.batch
        sampler = BalancedBatchSampler(
            self.train_set.labels,
            int(b.classes_per_batch),
            int(b.samples_per_class),
            seed=int(self.cfg.seed),
            epoch=epoch,
            start_batch=start_batch,
        )
        workers = int(self.tcfg.num_workers) if self.cuda else int(self.tcfg.cpu_num_workers)
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.cuda and bool(self.tcfg.pin_memory),
            persistent_workers=False,
        )
        total = len(sampler) + start_batch
        limit = self.tcfg.max_batches_per_epoch
        return loader, total if limit is None else min(total, int(limit))

    def fit(self) -> list[dict[str, float]]:
        """Run (or finish) all epochs; returns the per-epoch history."""
        self.try_resume()
        epochs, warm = int(self.tcfg.epochs), int(self.tcfg.warmup_epochs)
        while self.state.epoch < epochs:
            epoch = self.state.epoch
            opt = self.opt_warm if epoch < warm else self.opt_main
            stats = self._run_epoch(epoch, opt, warmup=epoch < warm)
            if stats is None:  # pre-empted: a checkpoint was written and the job hands over
                preempt.acknowledge()
                return self.state.history
            self.state.history.append(stats)
            self.state = TrainState(epoch=epoch + 1, history=self.state.history)
            self.save()
            self.logger.log({f"train/{k}": v for k, v in stats.items()}, step=epoch + 1)
        return self.state.history

    def _run_epoch(self, epoch: int, opt: torch.optim.Optimizer, warmup: bool) -> dict[str, float] | None:
        self.model.train()
        start = self.state.batch
        loader, total = self._loader(epoch, start)
        clip = self.tcfg.clip_grad_value
        every = int(self.tcfg.checkpoint_every_batches)
        loss_sum, n_batches = self.state.partial_loss_sum, self.state.partial_batches
        n_images, t0 = 0, time.perf_counter()
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"epoch {epoch + 1}/{self.tcfg.epochs}" + (" (warm-up)" if warmup else ""),
            leave=False,
            dynamic_ncols=True,
        )
        for i, (x, y, _) in enumerate(loader, start=start):
            if i >= total:
                break
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.cuda and bool(self.tcfg.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", enabled=self.amp):
                z = self.model(x)
            value = self.loss(z.float(), y)
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(value).backward()
            if clip is not None:
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_value_(self.model.parameters(), float(clip))
            self.scaler.step(opt)
            self.scaler.update()
            loss_sum += float(value.detach())
            n_batches += 1
            n_images += x.shape[0]
            self.state.batch = i + 1
            rate = n_images / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / n_batches:.4f}", img_s=f"{rate:.0f}")
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
