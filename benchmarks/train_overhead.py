"""Framework overhead of training: eif's trainer against a bare PyTorch loop doing the same work.

    PYTHONPATH=. python benchmarks/train_overhead.py 2>/dev/null    # default job, 10 epochs, 3 pairs
    PYTHONPATH=. python benchmarks/train_overhead.py --epochs 2 --warmup-epochs 1 --repeats 1 \
        --max-per-class 200                                          # a quick smoke run

Both sides train the default job (Fashion-MNIST, SmallCnn, ProxyNCA++; the real Hydra config,
composed from ``conf/``) on the CPU from the same initial weights:

- *eif*: :class:`eif.training.trainer.Trainer`, called as the ``train`` stage calls it, with its
  checkpoints (written to a temporary directory), progress bar (to stderr) and a no-op run logger
  (``logger=none``).
- *bare*: a plain loop written here. The same batches (the indices of
  :class:`~eif.data.samplers.BalancedBatchSampler`) and per-sample augmentation (the same transform,
  torch's CPU generator seeded with the sample's augmentation seed, as eif does), collated with
  ``torch.stack``; the same Adam groups, warm-up switch and gradient clipping. Nothing else: no
  DataLoader, checkpoints, progress bar or signal polling.

The two are run alternately (eif, bare, eif, bare, ...); wall time (``perf_counter``) and CPU time
(``process_time``, all threads) cover building the optimisers and training. Both see bit-identical
batches, so their final losses must agree; they are printed. The last lines are machine-readable:
``train_overhead_ratio=`` (median eif wall / median bare wall) and ``train_overhead_cpu_ratio=``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from PIL import Image
from torch import nn

from eif.config import load_job
from eif.data.samplers import BalancedBatchSampler
from eif.data.transforms import compose as compose_transform
from eif.logging.run_logger import RunLogger
from eif.pipeline import Env
from eif.training.trainer import Trainer, make_optimizer
from eif.utils.seed import seed_everything

ROOT = Path(__file__).resolve().parents[1]


def load_default_job(epochs: int, warmup: int | None, max_per_class: int | None) -> Env:
    """The default job (its ``auto`` settings resolved from the data) trained for ``epochs`` epochs."""
    os.environ.setdefault("EIF_ROOT", str(ROOT))
    overrides = ["logger=none", "device=cpu", "stages=[train]", f"train.epochs={epochs}"]
    if warmup is not None:
        overrides.append(f"train.warmup_epochs={warmup}")
    if max_per_class is not None:
        overrides.append(f"dataset.max_per_class={max_per_class}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.gettempdir()
    return Env(load_job(cfg), cache_dir=None)


def build(job: Any, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Model and loss with the ``train`` stage's initialisation (``seed_everything(seed)`` first)."""
    seed_everything(job.seed)
    model = job.model.build(pretrained=False)
    loss = job.loss.build(num_classes, job.model.embedding_size)
    return model, loss


def run_eif(job: Any, bundle: Any) -> tuple[float, nn.Module]:
    """Train with eif's Trainer as the ``train`` stage does; (mean loss of the last epoch, model)."""
    model, loss = build(job, bundle.num_train_classes)
    tf = job.dataset.transforms
    train_set = bundle.train.with_transform(compose_transform(tf.normalization, tf.train))
    with tempfile.TemporaryDirectory(prefix="eif-train-overhead-") as tmp:
        trainer = Trainer(
            model,
            loss,
            train_set,
            job.train,
            job.dataset.batch,
            job.seed,
            torch.device("cpu"),
            Path(tmp) / "ckpt",
            RunLogger(),
            progress=True,
        )
        history = trainer.fit()
    assert history is not None
    return history[-1]["loss"], model


def run_bare(job: Any, bundle: Any) -> tuple[float, nn.Module]:
    """The same training as a plain loop; (mean loss of the last epoch, model)."""
    model, loss = build(job, bundle.num_train_classes)
    tf, cfg, batch = job.dataset.transforms, job.train, job.dataset.batch
    transform = compose_transform(tf.normalization, tf.train)
    images, labels = bundle.train.images, bundle.train.labels
    opt_warm = make_optimizer(model, loss, cfg.optimizer, warmup=True)
    opt_main = make_optimizer(model, loss, cfg.optimizer, warmup=False)
    model.train()
    mean = float("nan")
    for epoch in range(cfg.epochs):
        opt = opt_warm if epoch < cfg.warmup_epochs else opt_main
        sampler = BalancedBatchSampler(
            labels, batch.classes_per_batch, batch.samples_per_class, seed=job.seed, epoch=epoch
        )
        indices = sampler.epoch_indices()
        n = sampler.num_batches if cfg.max_batches_per_epoch is None else cfg.max_batches_per_epoch
        total = 0.0
        for b in range(min(n, sampler.num_batches)):
            xs = []
            for i, s in zip(indices[b].tolist(), sampler.aug_seeds(b).tolist()):
                torch.default_generator.manual_seed(s)
                xs.append(transform(Image.fromarray(images[i])))
            x, y = torch.stack(xs), torch.from_numpy(labels[indices[b]])
            value = loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            value.backward()
            if cfg.clip_grad_value is not None:
                nn.utils.clip_grad_value_(model.parameters(), cfg.clip_grad_value)
            opt.step()
            total += float(value.detach())
        mean = total / max(min(n, sampler.num_batches), 1)
    return mean, model


def timed(fn: Callable[[], tuple[float, nn.Module]]) -> tuple[float, float, float, nn.Module]:
    """(wall s, CPU s of all threads, final loss, model) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    final, model = fn()
    return time.perf_counter() - w0, time.process_time() - c0, final, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="pairs of runs (eif, bare)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--warmup-epochs", type=int, default=None, help="default: the config's")
    ap.add_argument("--max-per-class", type=int, default=None, help="images per class (default: config's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = load_default_job(args.epochs, args.warmup_epochs, args.max_per_class)
    job, bundle = env.job, env.bundle
    n_batches = BalancedBatchSampler(
        bundle.train.labels, job.dataset.batch.classes_per_batch, job.dataset.batch.samples_per_class, 0, 0
    ).num_batches
    print(
        f"job: {job.dataset.name} ({len(bundle.train)} train images, {n_batches} batches of "
        f"{job.dataset.batch.size} per epoch), {job.model.name}, {job.loss.name}; {args.epochs} epochs "
        f"({job.train.warmup_epochs} warm-up), torch threads={torch.get_num_threads()}, cpu"
    )
    rows: dict[str, list[tuple[float, float, float]]] = {"eif": [], "bare": []}
    models: dict[str, nn.Module] = {}
    runs = {"eif": lambda: run_eif(job, bundle), "bare": lambda: run_bare(job, bundle)}
    print(f"{'run':>4} {'what':<5} {'wall s':>8} {'cpu s':>8} {'final loss':>11}")
    for r in range(args.repeats):
        for name, fn in runs.items():
            wall, cpu, final, models[name] = timed(fn)
            rows[name].append((wall, cpu, final))
            print(f"{r + 1:>4} {name:<5} {wall:8.2f} {cpu:8.2f} {final:11.6f}", flush=True)
    med = {
        k: (statistics.median(w for w, _, _ in v), statistics.median(c for _, c, _ in v))
        for k, v in rows.items()
    }
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            models["eif"].state_dict().values(), models["bare"].state_dict().values(), strict=True
        )
    )
    print(f"median wall: eif {med['eif'][0]:.2f} s, bare {med['bare'][0]:.2f} s")
    print(f"median cpu:  eif {med['eif'][1]:.2f} s, bare {med['bare'][1]:.2f} s")
    print(
        f"final loss: eif {rows['eif'][-1][2]:.6f}, bare {rows['bare'][-1][2]:.6f}; "
        f"weights {'bit-identical' if same else 'DIFFER'}"
    )
    print(f"train_overhead_ratio={med['eif'][0] / med['bare'][0]:.3f}")
    print(f"train_overhead_cpu_ratio={med['eif'][1] / med['bare'][1]:.3f}")


if __name__ == "__main__":
    main()
