"""Stage ``retrain``: re-weight the training set per confusion and method, re-train the head, measure Δd.

For every confusion (pair or group, mined by ``mine``) and every method (from ``influence``) the
training samples get weights from the sign of their score (helpful x2, harmful x0, the rest x1 by
default; docs/protocol.md, "Re-training"; ``retrain.weights.schemes`` adds the ``magnitude``
scheme, weights proportional to |score| within the top sets, labelled ``<method>:magnitude``) and a
copy of the head weight W is re-trained for one epoch with the trunk, bias and proxies frozen.
Controls (``retrain.controls``): ``drift``, one re-training with every weight 1, and
``random_<label>``, the label's weights of each confusion randomly permuted (the same counts of 0s
and 2s). All copies train together (``eif.retrain.head``).
Then d(p; W') and d(p; W0) are measured on the original test features (paper Eq. 7-8).

Artifacts:
- ``distances.npz``: per kind ``k`` in (pair, group): ``{k}_d0`` float64 (n,) (original model),
  ``{k}_d1_{label}`` (n,) (re-trained), ``{k}_delta_{label}`` = d1 - d0 (positive = the confusion
  moved apart, i.e. improved), in the mine stage's confusion order; ``label`` is a method,
  ``random_<method>`` or ``drift`` (and ``<method>:<scheme>``, ``random_<method>:<scheme>`` for each
  weighting scheme beyond ``sign``).
- ``distances.csv``: the same, one row per (kind, confusion, label).
- ``retrain.json``: number of heads, labels, wall time of all re-trainings, features mode, device.
The trunk features of the re-training epoch (``features=augmented``) are the ``retrain_features``
stage, shared by every re-training configuration of the same model.
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
from eif.influence.artifacts import Influence
from eif.retrain.adam import AdamConfig
from eif.retrain.distance import confusion_distance
from eif.retrain.features import batches_from_indices, epoch_batches
from eif.retrain.head import EpochBatches, retrain_heads
from eif.retrain.labels import scheme_label
from eif.retrain.weights import SCHEMES
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.training.trained import load_trained
from eif.utils.errors import NothingToExplain, require
from eif.utils.io import read_json, save_npz, write_json, write_text
from eif.utils.seed import derive_seed

log = logging.getLogger(__name__)


class WeightsConfig(Settings):
    """The paper's epsilon: helpful samples (score < 0) get ``helpful``, harmful ones ``harmful``, the
    rest 1; ``topk``: None = every sample by its sign (the reference), k = only the k largest |score|.
    ``schemes``: the weightings re-trained (``eif.retrain.weights.SCHEMES``); ``sign`` (the paper's)
    labels its re-trainings by the method, every other scheme by ``<method>:<scheme>``."""

    helpful: NonNegativeFloat
    harmful: NonNegativeFloat
    topk: PositiveInt | None
    schemes: tuple[str, ...]


class RetrainStageConfig(Settings):
    """``retrain``: re-weight per confusion and method, re-train the head W (docs/table1.md)."""

    # Methods whose scores re-weight the training set; null = every method the influence stage ran.
    methods: tuple[str, ...] | None
    kinds: tuple[Literal["pair", "group"], ...]
    weights: WeightsConfig
    # drift: one re-training with every weight 1 (what re-training alone does to d); random: for
    # every confusion and method, that method's weights randomly permuted (same counts of 0s and 2s).
    controls: tuple[Literal["drift", "random"], ...]
    optimizer: AdamConfig
    clip_grad_value: PositiveFloat | None
    epochs: PositiveInt
    # augmented: the epoch's trunk features under the train transform (the reference); eval: the
    # cached embed-stage features in the same batch order (cheaper).
    features: Literal["augmented", "eval"]
    heads_per_chunk: PositiveInt | None = setting(unkeyed=SPEED)
    num_workers: NonNegativeInt = setting(unkeyed=SPEED)


class RetrainSettings(Settings):
    retrain: RetrainStageConfig
    methods: tuple[str, ...]
    seed: int
    batch: BatchConfig


def _settings(job: Any, env: Any) -> RetrainSettings:
    methods = job.retrain.methods if job.retrain.methods is not None else tuple(job.methods)
    return RetrainSettings(retrain=job.retrain, methods=methods, seed=job.seed, batch=job.dataset.batch)


def _deps(job: Any) -> tuple[str, ...]:
    augmented = job is None or job.retrain.features == "augmented"
    return ("train", "embed", "influence") + (("retrain_features",) if augmented else ())


def _check(job: Any) -> None:
    missing = set(job.retrain.methods or ()) - set(job.methods)
    require(
        not missing,
        f"retrain.methods names {sorted(missing)}, not among the job's methods {sorted(job.methods)}",
    )
    missing = set(job.retrain.kinds) - set(job.influence.kinds)
    require(not missing, f"retrain.kinds needs {sorted(missing)} in influence.kinds")
    schemes = job.retrain.weights.schemes
    unknown = [x for x in schemes if x not in SCHEMES]
    require(not unknown, f"retrain.weights.schemes: unknown {unknown}; known: {sorted(SCHEMES)}")
    require(
        "sign" in schemes and len(set(schemes)) == len(schemes),
        f"retrain.weights.schemes must name sign (the paper's Table 1) and no scheme twice, "
        f"got {list(schemes)}",
    )


@dataclass
class Head:
    """One re-training: ``kind`` of confusion, ``label`` (a method, ``drift`` or ``random_<method>``),
    ``confusion`` index (-1 for drift, which serves every confusion) and its sample weights (N,)."""

    kind: str
    label: str
    confusion: int
    weights: torch.Tensor


def plan_heads(s: RetrainSettings, influence: Influence) -> tuple[list[Head], dict[str, list[np.ndarray]]]:
    """Every re-training of the stage and the confusions (test pairs) of each kind."""
    rc = s.retrain
    heads: list[Head] = []
    pairs: dict[str, list[np.ndarray]] = {}
    for kind in rc.kinds:
        if not influence.has(kind, s.methods[0]):
            continue
        for m in s.methods:
            a = influence.get(kind, m)
            pairs.setdefault(kind, a.pairs)
            require(
                len(a.pairs) == len(pairs[kind]),
                f"influence: the {kind}s of {m} differ from {s.methods[0]}'s",
            )
            for scheme in rc.weights.schemes:
                label = scheme_label(m, scheme)
                w = SCHEMES[scheme](
                    torch.as_tensor(a.scores), rc.weights.helpful, rc.weights.harmful, rc.weights.topk
                )
                heads += [Head(kind, label, i, w[i]) for i in range(len(w))]
                if "random" in rc.controls:  # the same permutation under every scheme
                    for i in range(len(w)):
                        seed = derive_seed(s.seed, len(kind), i, sum(map(ord, m)))
                        perm = torch.randperm(len(w[i]), generator=torch.Generator().manual_seed(seed))
                        heads.append(Head(kind, f"random_{label}", i, w[i][perm]))
    if not heads:
        raise NothingToExplain(f"influence scored no {' or '.join(rc.kinds)} confusions to re-train for")
    if "drift" in rc.controls:
        heads.append(Head("", "drift", -1, torch.ones_like(heads[0].weights)))
    return heads, pairs


def _epoch(s: RetrainSettings, run: Run) -> EpochBatches:
    if s.retrain.features == "augmented":
        with np.load(run.input("retrain_features") / "epoch.npz") as z:
            return EpochBatches.from_arrays(dict(z))
    with np.load(run.input("embed") / "train.npz") as z:
        feats, labels = z["features"], z["labels"]
    return batches_from_indices(epoch_batches(labels, s.batch, s.seed, s.retrain.epochs), feats, labels)


def _compute(s: RetrainSettings, run: Run, out: Path) -> None:
    rc = s.retrain
    model, loss, _ = load_trained(run.input("train"), run.device)
    loss.requires_grad_(False)
    w0, bias = model.head.weight.detach(), model.head.bias.detach()
    with np.load(run.input("embed") / "test.npz") as z:
        test_features = torch.as_tensor(z["features"], dtype=torch.float32)
    heads, pairs = plan_heads(s, Influence(run.input("influence")))
    epoch = _epoch(s, run)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    t0 = time.perf_counter()
    weights = torch.stack([h.weights for h in heads])
    opt, clip = rc.optimizer, rc.clip_grad_value
    log.info("retrain: re-training %d heads over %d batches", len(heads), epoch.num_batches)
    w1 = retrain_heads(
        w0,
        bias,
        weights,
        epoch,
        loss.per_sample,
        opt,
        clip,
        run.device,
        rc.heads_per_chunk,
        progress=run.progress,
    )
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - t0
    labels = list(dict.fromkeys(h.label for h in heads))
    log.info(
        "retrain: %d heads (%s) re-trained together over %d batches in %.2f s",
        len(heads),
        ", ".join(labels),
        epoch.num_batches,
        seconds,
    )

    w0c, bc = w0.cpu(), bias.cpu()
    arrays: dict[str, np.ndarray] = {}
    rows = []
    drift = next((j for j, h in enumerate(heads) if h.label == "drift"), None)
    for kind, kind_pairs in pairs.items():
        pt = [torch.as_tensor(p) for p in kind_pairs]
        d0 = np.array([float(confusion_distance(w0c, bc, test_features, p)) for p in pt])
        arrays[f"{kind}_d0"] = d0
        by_label: dict[str, list[int]] = {}
        for j, h in enumerate(heads):
            if h.kind == kind:
                by_label.setdefault(h.label, []).append(j)
        if drift is not None:
            by_label["drift"] = [drift] * len(pt)
        for label, idx in by_label.items():
            d1 = np.array([float(confusion_distance(w1[j], bc, test_features, p)) for j, p in zip(idx, pt)])
            arrays[f"{kind}_d1_{label}"] = d1
            arrays[f"{kind}_delta_{label}"] = d1 - d0
            rows += [
                {
                    "kind": kind,
                    "confusion": i,
                    "method": label,
                    "num_pairs": len(pt[i]),
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
            "counts": {kind: len(p) for kind, p in pairs.items()},
            "methods": list(s.methods),
            "schemes": list(rc.weights.schemes),
            "labels": labels,
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
    version=3,  # 3: weighting schemes (retrain.json lists them; labels <method>:<scheme> beyond sign)
)
