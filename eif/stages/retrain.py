"""Stage ``retrain``: re-weight the training set per confusion and method, re-train the head, measure Δd.

For every confusion (pair or group, mined by ``mine``) and every method (EIF, IF, from ``influence``)
the training samples get weights from the sign of their score (helpful x2, harmful x0, the rest x1
by default; PROTOCOL.md section 7) and a copy of the head weight W is re-trained for one epoch with
the trunk, bias and proxies frozen. All copies train together (``eif.retrain.head``). Then
d(p; W') and d(p; W0) are measured on the original test features (paper Eq. 7-8).

Artifacts:
- ``distances.npz``: per kind ``k`` in (pair, group): ``{k}_d0`` float64 (n,) (original model),
  ``{k}_d1_{method}`` (n,) (re-trained), ``{k}_delta_{method}`` = d1 - d0 (positive = the
  confusion moved apart, i.e. improved), in the mine stage's confusion order.
- ``distances.csv``: the same, one row per (kind, confusion, method).
- ``retrain.json``: number of heads, wall time of all re-trainings, features mode, device.
The trunk features of the re-training epoch (``features=augmented``) are their own store entry
``retrain_features/<key>/epoch.npz`` (see :class:`eif.retrain.head.EpochBatches`), shared by every
re-training configuration of the same model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from eif.retrain.distance import confusion_distance
from eif.retrain.features import augmented_epoch, batches_from_indices
from eif.retrain.head import EpochBatches, RetrainConfig, retrain_heads
from eif.retrain.weights import sample_weights
from eif.stages.base import Context, Stage, link_artifacts, plain
from eif.stages.common import load_trained
from eif.utils.errors import EifError, require
from eif.utils.io import read_json, save_npz, write_json, write_text
from eif.utils.store import spec_key

log = logging.getLogger(__name__)

FEATURES_STAGE = "retrain_features"
_NOT_KEYED = ("num_workers",)


@dataclass
class Confusions:
    """The confusions of one kind: ``pairs[c]`` int64 (P_c, 2) test indices, ``scores[method]`` (n, N)."""

    kind: str
    pairs: list[np.ndarray]
    scores: dict[str, np.ndarray]


def _schedule_fields(cfg: DictConfig) -> dict[str, Any]:
    """What fixes the re-training batches and their augmentations (besides the trained model)."""
    return {
        "seed": int(cfg.seed),
        "epochs": int(cfg.retrain.epochs),
        "batch": plain(cfg.dataset.batch),
        "train_transform": plain(cfg.dataset.transforms.train),
    }


def _fields(cfg: DictConfig) -> dict[str, Any]:
    r = {k: v for k, v in plain(cfg.retrain).items() if k not in _NOT_KEYED}
    return {"retrain": r, **_schedule_fields(cfg)}


def _batches(labels: np.ndarray, cfg: DictConfig) -> list[list[tuple[int, int]]]:
    """The sampler's batches for re-training epochs 0..epochs-1 under the original model's seed."""
    from eif.data.samplers import BalancedBatchSampler

    b = cfg.dataset.batch
    return [
        batch
        for epoch in range(int(cfg.retrain.epochs))
        for batch in BalancedBatchSampler(
            labels, int(b.classes_per_batch), int(b.samples_per_class), int(cfg.seed), epoch
        )
    ]


def augmented_features(ctx: Context) -> Path:
    """The store entry with the re-training epoch's trunk features under the train transform."""
    cfg = ctx.cfg
    spec = {"stage": FEATURES_STAGE, "fields": _schedule_fields(cfg), "deps": {"train": ctx.key("train")}}

    def compute(out: Path) -> None:
        from eif.data.transforms import build_transform

        model, _, _ = load_trained(ctx.require("train"), cfg, ctx.device)
        data = ctx.data()
        train_set = data.train.with_transform(build_transform(cfg.dataset.transforms, "train"))
        t0 = time.perf_counter()
        epoch = augmented_epoch(
            model.features,
            train_set,
            _batches(np.asarray(data.train.labels), cfg),
            ctx.device,
            num_workers=int(cfg.retrain.num_workers),
        )
        save_npz(out / "epoch.npz", **epoch.arrays())
        write_json(
            out / "features.json",
            {
                "samples": int(len(epoch.indices)),
                "batches": epoch.num_batches,
                "seconds": time.perf_counter() - t0,
            },
        )

    directory, computed = ctx.store.get_or_compute(FEATURES_STAGE, spec_key(spec), spec, compute)
    log.info("retrain: %s epoch features %s", "computed" if computed else "reusing", directory)
    link_artifacts(directory, ctx.run_dir / "artifacts" / FEATURES_STAGE)
    return directory


def load_confusions(influence_dir: Path, kind: str, methods: list[str]) -> Confusions:
    """Confusions of ``kind`` (pair | group) with each method's scores, from ``<kind>_<method>.npz``.

    Each file holds ``scores`` (K, N_train) (positive = harmful) and the confusions' test pairs
    ``pairs`` (sum P_k, 2) with ``pair_offsets`` (K+1,), in the mine stage's order.
    """
    require(kind in ("pair", "group"), f"retrain.kinds holds pair and group only, got {kind!r}")
    pairs: list[np.ndarray] | None = None
    scores = {}
    for m in methods:
        path = influence_dir / f"{kind}_{m}.npz"
        require(path.is_file(), f"{path} is missing: influence.methods needs {m}, influence.kinds {kind}")
        with np.load(path) as z:
            off, flat = z["pair_offsets"], z["pairs"].astype(np.int64)
            these = [flat[a:b] for a, b in zip(off[:-1], off[1:])]
            scores[m] = z["scores"].astype(np.float32)
        if pairs is None:
            pairs = these
        require(
            len(these) == len(pairs) and all(np.array_equal(a, b) for a, b in zip(these, pairs)),
            f"{path}: the {kind}s differ from those of {methods[0]}",
        )
    return Confusions(kind, pairs or [], scores)


def _epoch(ctx: Context) -> EpochBatches:
    mode = str(ctx.cfg.retrain.features)
    if mode == "augmented":
        with np.load(augmented_features(ctx) / "epoch.npz") as z:
            return EpochBatches.from_arrays(dict(z))
    require(mode == "eval", f"retrain.features must be augmented or eval, got {mode!r}")
    with np.load(ctx.require("embed") / "train.npz") as z:
        feats, labels = z["features"], z["labels"]
    return batches_from_indices(_batches(labels, ctx.cfg), feats, labels)


def _compute(ctx: Context, out: Path) -> None:
    cfg, rc = ctx.cfg, ctx.cfg.retrain
    methods, kinds = [str(m) for m in rc.methods], [str(k) for k in rc.kinds]
    model, loss, _ = load_trained(ctx.require("train"), cfg, ctx.device)
    loss.requires_grad_(False)
    w0, bias = model.head.weight.detach(), model.head.bias.detach()
    with np.load(ctx.require("embed") / "test.npz") as z:
        test_features = torch.as_tensor(z["features"], dtype=torch.float32)
    confusions = [load_confusions(ctx.require("influence"), k, methods) for k in kinds]
    heads = [(c.kind, i, m) for c in confusions for m in methods for i in range(len(c.pairs))]
    if not heads:
        raise EifError(f"retrain: the influence stage scored no confusions of kinds {kinds}")
    epoch = _epoch(ctx)
    # Row order (kind, method, confusion), the order of ``heads``.
    scores = torch.as_tensor(np.concatenate([c.scores[m] for c in confusions for m in methods]))
    weights = sample_weights(
        scores,
        float(rc.weights.helpful),
        float(rc.weights.harmful),
        None if rc.weights.topk is None else int(rc.weights.topk),
    )
    opt = RetrainConfig(
        lr=float(rc.optimizer.lr),
        betas=tuple(float(b) for b in rc.optimizer.betas),
        eps=float(rc.optimizer.eps),
        clip_grad_value=None if rc.clip_grad_value is None else float(rc.clip_grad_value),
    )
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    t0 = time.perf_counter()
    w1 = retrain_heads(
        w0,
        bias,
        weights,
        epoch,
        loss.per_sample,
        opt,
        ctx.device,
        None if rc.heads_per_chunk is None else int(rc.heads_per_chunk),
    )
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    seconds = time.perf_counter() - t0
    log.info(
        "retrain: %d heads (%s x %s) re-trained together over %d batches in %.2f s",
        len(heads),
        "+".join(kinds),
        "+".join(methods),
        epoch.num_batches,
        seconds,
    )

    w0c, bc = w0.cpu(), bias.cpu()
    arrays: dict[str, np.ndarray] = {}
    rows = []
    head_of = {h: j for j, h in enumerate(heads)}
    for c in confusions:
        d0 = np.array(
            [float(confusion_distance(w0c, bc, test_features, torch.as_tensor(p))) for p in c.pairs]
        )
        arrays[f"{c.kind}_d0"] = d0
        for m in methods:
            # One confusion at a time: each confusion has its own pairs; the pairs of one are few.
            d1 = np.array(
                [
                    float(
                        confusion_distance(w1[head_of[(c.kind, i, m)]], bc, test_features, torch.as_tensor(p))
                    )
                    for i, p in enumerate(c.pairs)
                ]
            )
            arrays[f"{c.kind}_d1_{m}"] = d1
            arrays[f"{c.kind}_delta_{m}"] = d1 - d0
            rows += [
                {
                    "kind": c.kind,
                    "confusion": i,
                    "method": m,
                    "num_pairs": len(c.pairs[i]),
                    "d_before": d0[i],
                    "d_after": d1[i],
                    "delta": d1[i] - d0[i],
                }
                for i in range(len(d0))
            ]
    save_npz(out / "distances.npz", **arrays)
    write_text(out / "distances.csv", pd.DataFrame(rows).to_csv(index=False))
    write_json(
        out / "retrain.json",
        {
            "num_heads": len(heads),
            "counts": {c.kind: len(c.pairs) for c in confusions},
            "methods": methods,
            "features": str(rc.features),
            "batches": epoch.num_batches,
            "samples_per_epoch": int(len(epoch.indices)),
            "retrain_seconds": seconds,
            "device": str(ctx.device),
        },
    )


def _publish(ctx: Context, out: Path) -> None:
    info = read_json(out / "retrain.json")
    log.info(
        "retrain: %d re-trainings (%s) took %.2f s in all on %s",
        info["num_heads"],
        info["counts"],
        info["retrain_seconds"],
        info["device"],
    )
    ctx.logger.summary({"retrain/num_heads": info["num_heads"], "retrain/seconds": info["retrain_seconds"]})
    ctx.logger.table("retrain/distances", pd.read_csv(out / "distances.csv"))


STAGE = Stage(
    name="retrain", deps=("train", "embed", "influence"), fields=_fields, compute=_compute, publish=_publish
)
