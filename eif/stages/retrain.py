"""Stage ``retrain``: re-weight the training set per confusion and method, re-train the head, measure Δd.

For every confusion (pair or group, mined by ``mine``) and every method (EIF, IF, from ``influence``)
the training samples get weights from the sign of their score (helpful x2, harmful x0, the rest x1
by default; docs/protocol.md, "Re-training") and a copy of the head weight W is re-trained for one
epoch with
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
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from eif.data.config import BatchConfig
from eif.retrain.distance import confusion_distance
from eif.retrain.features import batches_from_indices
from eif.retrain.head import EpochBatches, RetrainConfig, retrain_heads
from eif.retrain.weights import sample_weights
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.stages.common import load_trained
from eif.stages.retrain_features import epoch_batches
from eif.utils.errors import EifError, require
from eif.utils.io import read_json, save_npz, write_json, write_text

log = logging.getLogger(__name__)


class WeightsConfig(Settings):
    """The paper's epsilon: helpful samples (score < 0) get ``helpful``, harmful ones ``harmful``, the
    rest 1; ``topk``: None = every sample by its sign (the reference), k = only the k largest |score|."""

    helpful: NonNegativeFloat = 2.0
    harmful: NonNegativeFloat = 0.0
    topk: PositiveInt | None = None


class AdamConfig(Settings):
    lr: PositiveFloat = 4e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


class RetrainStageConfig(Settings):
    """``retrain``: re-weight per confusion and method, re-train the head W (docs/table1.md)."""

    methods: tuple[Literal["eif", "if"], ...] = ("eif", "if")
    kinds: tuple[Literal["pair", "group"], ...] = ("pair", "group")
    weights: WeightsConfig = WeightsConfig()
    optimizer: AdamConfig = AdamConfig()
    clip_grad_value: PositiveFloat | None = 10.0
    epochs: PositiveInt = 1
    # augmented: the epoch's trunk features under the train transform (the reference); eval: the
    # cached embed-stage features in the same batch order (cheaper).
    features: Literal["augmented", "eval"] = "augmented"
    heads_per_chunk: PositiveInt | None = setting(None, unkeyed=SPEED)
    num_workers: NonNegativeInt = setting(4, unkeyed=SPEED)


class RetrainSettings(Settings):
    retrain: RetrainStageConfig
    seed: int
    batch: BatchConfig


def _settings(job: Any, env: Any) -> RetrainSettings:
    return RetrainSettings(retrain=job.retrain, seed=job.seed, batch=job.dataset.batch)


def _deps(job: Any) -> tuple[str, ...]:
    augmented = job is None or job.retrain.features == "augmented"
    return ("train", "embed", "influence") + (("retrain_features",) if augmented else ())


def _check(job: Any) -> None:
    missing = set(job.retrain.methods) - set(job.influence.methods)
    require(not missing, f"retrain.methods needs {sorted(missing)} in influence.methods")
    missing = set(job.retrain.kinds) - set(job.influence.kinds)
    require(not missing, f"retrain.kinds needs {sorted(missing)} in influence.kinds")


@dataclass
class Confusions:
    """The confusions of one kind: ``pairs[c]`` int64 (P_c, 2) test indices, ``scores[method]`` (n, N)."""

    kind: str
    pairs: list[np.ndarray]
    scores: dict[str, np.ndarray]


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


def _epoch(s: RetrainSettings, run: Run) -> EpochBatches:
    if s.retrain.features == "augmented":
        with np.load(run.input("retrain_features") / "epoch.npz") as z:
            return EpochBatches.from_arrays(dict(z))
    with np.load(run.input("embed") / "train.npz") as z:
        feats, labels = z["features"], z["labels"]
    return batches_from_indices(epoch_batches(labels, s.batch, s.seed, s.retrain.epochs), feats, labels)


def _compute(s: RetrainSettings, run: Run, out: Path) -> None:
    rc = s.retrain
    methods, kinds = list(rc.methods), list(rc.kinds)
    model, loss, _ = load_trained(run.input("train"), run.device)
    loss.requires_grad_(False)
    w0, bias = model.head.weight.detach(), model.head.bias.detach()
    with np.load(run.input("embed") / "test.npz") as z:
        test_features = torch.as_tensor(z["features"], dtype=torch.float32)
    confusions = [load_confusions(run.input("influence"), k, methods) for k in kinds]
    heads = [(c.kind, i, m) for c in confusions for m in methods for i in range(len(c.pairs))]
    if not heads:
        raise EifError(f"retrain: the influence stage scored no confusions of kinds {kinds}")
    epoch = _epoch(s, run)
    # Row order (kind, method, confusion), the order of ``heads``.
    scores = torch.as_tensor(np.concatenate([c.scores[m] for c in confusions for m in methods]))
    weights = sample_weights(scores, rc.weights.helpful, rc.weights.harmful, rc.weights.topk)
    opt = RetrainConfig(
        lr=rc.optimizer.lr, betas=rc.optimizer.betas, eps=rc.optimizer.eps, clip_grad_value=rc.clip_grad_value
    )
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    t0 = time.perf_counter()
    w1 = retrain_heads(
        w0,
        bias,
        weights,
        epoch,
        loss.per_sample,
        opt,
        run.device,
        rc.heads_per_chunk,
    )
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
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
            "features": rc.features,
            "batches": epoch.num_batches,
            "samples_per_epoch": int(len(epoch.indices)),
            "retrain_seconds": seconds,
            "device": str(run.device),
        },
    )


def _publish(s: RetrainSettings, run: Run, out: Path) -> None:
    info = read_json(out / "retrain.json")
    log.info(
        "retrain: %d re-trainings (%s) took %.2f s in all on %s",
        info["num_heads"],
        info["counts"],
        info["retrain_seconds"],
        info["device"],
    )
    run.logger.summary({"retrain/num_heads": info["num_heads"], "retrain/seconds": info["retrain_seconds"]})
    run.logger.table("retrain/distances", pd.read_csv(out / "distances.csv"))


STAGE = Stage(
    name="retrain",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=_deps,
    config=("retrain", RetrainStageConfig),
    check=_check,
)
