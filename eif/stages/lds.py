"""Stage ``lds``: the attribution benchmark. How well does each method's score predict what re-training
on a changed training set does to a confusion (docs/science.md, "Attribution benchmark")?

1. M random alpha-subsets of the training set (shared by all confusions and methods).
2. The head re-trained on each subset from the trained W0 (weights 1 in the subset, 0 outside; the
   re-training protocol of Table 1: Adam lr 4e-5, clipping, the class-balanced sampler), for each
   batch-order seed, with W recorded after each horizon (epochs); all subsets train together.
3. d of every confusion under every re-trained head, averaged over the batch-order seeds.
4. Per method, kind and horizon: the LDS (mean Spearman over confusions between -sum of scores over
   the subset and the measured d) with a bootstrap interval over subsets and confusions; the noise
   ceiling (:func:`eif.lds.noise_ceiling` of the correlation between the batch orders).
5. Removal: each confusion re-trained without its k most harmful samples by each method, against
   without k random ones (the control, which stands in for the ``random`` method): Δd = d - d0
   (larger = better separated).

Re-training uses the cached eval-transform features (the embed stage): several epochs of augmented
trunk passes would dominate the cost and the ranking question does not need augmentation.

Artifacts: ``lds.json`` (rows, ceilings, removal, settings), ``lds.csv``, ``removal.csv``, ``lds.md``,
``removal.md``,
``measured.npz`` (per kind, d of shape (seeds, horizons, K, M)), ``subsets.npz``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import PositiveFloat, PositiveInt

from eif import lds
from eif.data.config import BatchConfig
from eif.influence.artifacts import Influence
from eif.retrain.adam import AdamConfig
from eif.retrain.distance import confusion_distances
from eif.retrain.features import batches_from_indices, epoch_batches
from eif.retrain.head import retrain_heads
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.tables.format import fmt, write_table
from eif.tables.robustness import mean_ci, one_sided
from eif.training.trained import load_trained
from eif.utils.errors import require
from eif.utils.io import read_json, save_npz, write_json, write_text

log = logging.getLogger(__name__)


class LdsConfig(Settings):
    """``lds``: the attribution benchmark's design (docs/science.md)."""

    subsets: PositiveInt
    alpha: float = setting(gt=0, lt=1)
    # re-training horizons, in epochs from the trained head (Table 1's protocol is 1)
    horizons: tuple[PositiveInt, ...]
    batch_seeds: tuple[int, ...]
    kinds: tuple[Literal["pair", "group"], ...]
    # removal check: drop each confusion's k most harmful samples (and, as control, k random ones)
    removal_k: tuple[PositiveInt, ...]
    removal_horizon: PositiveInt
    bootstrap: PositiveInt
    heads_per_chunk: PositiveInt | None = setting(unkeyed=SPEED)


class LdsSettings(Settings):
    lds: LdsConfig
    optimizer: AdamConfig
    clip_grad_value: PositiveFloat | None
    seed: int
    batch: BatchConfig


def _settings(job: Any, env: Any) -> LdsSettings:
    r = job.retrain
    return LdsSettings(
        lds=job.lds,
        optimizer=r.optimizer,
        clip_grad_value=r.clip_grad_value,
        seed=job.seed,
        batch=job.dataset.batch,
    )


def _check(job: Any) -> None:
    missing = set(job.lds.kinds) - set(job.influence.kinds)
    require(not missing, f"lds.kinds needs {sorted(missing)} in influence.kinds")
    require(len(job.lds.batch_seeds) >= 1, "lds.batch_seeds needs at least one seed")


def _compute(s: LdsSettings, run: Run, out: Path) -> None:
    cfg = s.lds
    influence = Influence(run.input("influence"))
    methods = influence.methods
    model, loss, _ = load_trained(run.input("train"), run.device)
    loss.requires_grad_(False)
    w0, bias = model.head.weight.detach(), model.head.bias.detach()
    with np.load(run.input("embed") / "train.npz") as z:
        feats, labels = z["features"], z["labels"]
    with np.load(run.input("embed") / "test.npz") as z:
        test = torch.as_tensor(z["features"], dtype=torch.float32)
    kinds = [k for k in cfg.kinds if influence.has(k, methods[0])]
    pairs = {k: [torch.as_tensor(p) for p in influence.get(k, methods[0]).pairs] for k in kinds}
    n = len(labels)
    member = lds.subsets(n, cfg.subsets, cfg.alpha, s.seed)
    per_epoch = len(epoch_batches(labels, s.batch, s.seed, 1))
    steps = [h * per_epoch for h in cfg.horizons]
    t0 = time.perf_counter()
    measured = {
        k: np.empty((len(cfg.batch_seeds), len(cfg.horizons), len(pairs[k]), cfg.subsets)) for k in kinds
    }
    for si, seed in enumerate(cfg.batch_seeds):
        epoch = batches_from_indices(epoch_batches(labels, s.batch, seed, max(cfg.horizons)), feats, labels)
        ws = retrain_heads(
            w0,
            bias,
            torch.as_tensor(member, dtype=torch.float32),
            epoch,
            loss.per_sample,
            s.optimizer,
            s.clip_grad_value,
            run.device,
            cfg.heads_per_chunk,
            snapshots=steps,
            progress=run.progress,
            desc=f"lds: batch order {si + 1} of {len(cfg.batch_seeds)}",
        )  # (S, M, E, D)
        for hi in range(len(cfg.horizons)):
            for k in kinds:
                measured[k][si, hi] = confusion_distances(ws[hi], bias.cpu(), test, pairs[k]).T.numpy()
        log.info(
            "lds: batch order %d of %d: %d subsets re-trained for %s epochs (%.1f s so far)",
            si + 1,
            len(cfg.batch_seeds),
            cfg.subsets,
            list(cfg.horizons),
            time.perf_counter() - t0,
        )
    lds_seconds = time.perf_counter() - t0
    rows, ceilings = [], []
    for k in kinds:
        target = measured[k].mean(0)  # (horizons, K, M): averaged over batch orders
        for hi, h in enumerate(cfg.horizons):
            if len(cfg.batch_seeds) > 1:
                r = lds.lds(measured[k][0, hi], measured[k][1, hi])
                ceilings.append(
                    {
                        "kind": k,
                        "horizon": h,
                        "between_orders": r,
                        "ceiling": lds.noise_ceiling(r, len(cfg.batch_seeds)),
                    }
                )
            for mi, m in enumerate(methods):
                pred = lds.predictions(influence.get(k, m).scores, member)
                lo, hi_ = lds.bootstrap_interval(pred, target[hi], cfg.bootstrap, s.seed + mi)
                rows.append(
                    {
                        "kind": k,
                        "method": m,
                        "horizon": h,
                        "lds": lds.lds(pred, target[hi]),
                        "low": lo,
                        "high": hi_,
                        "per_seed": [lds.lds(pred, measured[k][j, hi]) for j in range(len(cfg.batch_seeds))],
                    }
                )
    t1 = time.perf_counter()
    removal = _removal(s, influence, methods, kinds, pairs, w0, bias, feats, labels, test, loss, run)
    save_npz(out / "measured.npz", **{k: v for k, v in measured.items()})
    save_npz(out / "subsets.npz", membership=member)
    write_json(
        out / "lds.json",
        {
            "rows": rows,
            "ceilings": ceilings,
            "removal": removal,
            "methods": methods,
            "n_train": n,
            "confusions": {k: len(pairs[k]) for k in kinds},
            "seconds": {"lds": lds_seconds, "removal": time.perf_counter() - t1},
            "settings": cfg.model_dump(mode="json"),
        },
    )
    write_text(
        out / "lds.csv",
        pd.DataFrame([{**r, "per_seed": " ".join(f"{v:.4f}" for v in r["per_seed"])} for r in rows]).to_csv(
            index=False
        ),
    )
    write_table(pd.DataFrame(removal), out, "removal")
    write_text(out / "lds.md", markdown(rows, ceilings, removal))


def _removal(
    s: LdsSettings,
    influence: Influence,
    methods: list[str],
    kinds: list[str],
    pairs: dict,
    w0: torch.Tensor,
    bias: torch.Tensor,
    feats: np.ndarray,
    labels: np.ndarray,
    test: torch.Tensor,
    loss: Any,
    run: Run,
) -> list[dict[str, Any]]:
    """Each confusion re-trained without its k most harmful samples (per method) or k random ones."""
    cfg = s.lds
    seed = cfg.batch_seeds[0]
    epoch = batches_from_indices(epoch_batches(labels, s.batch, seed, cfg.removal_horizon), feats, labels)
    rows = []
    for kind in kinds:
        d0 = confusion_distances(w0.cpu()[None], bias.cpu(), test, pairs[kind])[0].numpy()
        kk = len(pairs[kind])
        # the control removes k random samples; the ``random`` method's top k would be the same thing
        scored = [m for m in methods if m != "random"]
        labels_ = ["random"] + scored
        weights = []
        for k in cfg.removal_k:
            scores = influence.get(kind, methods[0]).scores
            weights.append(lds.removal_weights(scores, k, seed=s.seed + k))
            weights += [lds.removal_weights(influence.get(kind, m).scores, k) for m in scored]
        w = torch.as_tensor(np.concatenate(weights))  # (|k| * (1 + methods) * K, N)
        t0 = time.perf_counter()
        ws = retrain_heads(
            w0,
            bias,
            w,
            epoch,
            loss.per_sample,
            s.optimizer,
            s.clip_grad_value,
            run.device,
            cfg.heads_per_chunk,
            progress=run.progress,
            desc=f"lds removal: {kind}s",
        )
        log.info("lds removal: %d %s re-trainings in %.1f s", len(w), kind, time.perf_counter() - t0)
        delta = np.empty(len(w))
        for j in range(0, len(w), kk):  # head j + c re-trained for confusion c
            d = confusion_distances(ws[j : j + kk], bias.cpu(), test, pairs[kind]).numpy()
            delta[j : j + kk] = np.diagonal(d) - d0
        delta = delta.reshape(len(cfg.removal_k), len(labels_), kk)
        for ki, k in enumerate(cfg.removal_k):
            rand = delta[ki, 0]
            for li, label in enumerate(labels_):
                row = {"kind": kind, "k": k, "removed": label, "mean_delta": float(delta[ki, li].mean())}
                if label != "random":
                    m, lo, hi = mean_ci(delta[ki, li] - rand, s.seed + ki * 31 + li)
                    _, p = (
                        one_sided("pairs" if kind == "pair" else "groups", delta[ki, li], rand)
                        if kk > 1
                        else (None, None)
                    )
                    row.update(vs_random=m, low=lo, high=hi, pvalue=p)
                rows.append(row)
    return rows


def _cell(v: float, lo: float | None = None, hi: float | None = None) -> str:
    if v is None or v != v:
        return ""
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and lo == lo else "")


def markdown(
    rows: list[dict[str, Any]], ceilings: list[dict[str, Any]], removal: list[dict[str, Any]]
) -> str:
    """The LDS table (methods x horizons, per kind, with intervals and the noise ceiling) and the
    removal table."""
    parts = [
        "# Attribution benchmark\n",
        "LDS: mean Spearman over confusions between predicted and re-trained d (95% bootstrap interval "
        "over subsets and confusions). Noise ceiling: the highest LDS the batch-order noise of the "
        "measured d allows (from the correlation r between two batch orders: sqrt(S r / (1 + (S - 1) r)) "
        "for d averaged over S orders).\n",
    ]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        horizons = sorted({r["horizon"] for r in rows if r["kind"] == kind})
        parts += [
            f"\n## LDS, {kind}s\n",
            "| method | " + " | ".join(f"{h} epoch{'s' if h > 1 else ''}" for h in horizons) + " |",
            "|---|" + "---|" * len(horizons),
        ]
        for m in dict.fromkeys(r["method"] for r in rows if r["kind"] == kind):
            by = {r["horizon"]: r for r in rows if r["kind"] == kind and r["method"] == m}
            parts.append(
                f"| {m} | "
                + " | ".join(_cell(by[h]["lds"], by[h]["low"], by[h]["high"]) for h in horizons)
                + " |"
            )
        ceil = {c["horizon"]: c["ceiling"] for c in ceilings if c["kind"] == kind}
        if ceil:
            parts.append(
                "| *noise ceiling* | " + " | ".join(_cell(ceil.get(h, float("nan"))) for h in horizons) + " |"
            )
    if removal:
        parts += [
            "\n## Removal: Δd after re-training without each confusion's k most harmful samples\n",
            "| kind | k | removed by | mean Δd | − random's Δd [95% CI] | p (H1: > random) |",
            "|---|---:|---|---:|---|---:|",
        ]
        for r in removal:
            p = r.get("pvalue")
            gain = f"{fmt(r['vs_random'])} [{fmt(r['low'])}, {fmt(r['high'])}]" if "vs_random" in r else ""
            head = f"| {r['kind']} | {r['k']} | {r['removed']} | {fmt(r['mean_delta'])}"
            parts.append(f"{head} | {gain} | {'' if p is None else fmt(p)} |")
    return "\n".join(parts) + "\n"


def _publish(s: LdsSettings, run: Run, out: Path) -> None:
    info = read_json(out / "lds.json")
    print((out / "lds.md").read_text(), flush=True)
    log.info(
        "lds: %d subsets x %s horizons x %d batch orders in %.1f s; removal %.1f s",
        s.lds.subsets,
        list(s.lds.horizons),
        len(s.lds.batch_seeds),
        info["seconds"]["lds"],
        info["seconds"]["removal"],
    )
    run.logger.table("lds/table", pd.read_csv(out / "lds.csv"))
    run.logger.table("lds/removal", pd.read_csv(out / "removal.csv"))
    run.logger.summary({f"lds/{r['kind']}/h={r['horizon']}/{r['method']}": r["lds"] for r in info["rows"]})
    run.logger.summary({f"lds/{c['kind']}/h={c['horizon']}/ceiling": c["ceiling"] for c in info["ceilings"]})


STAGE = Stage(
    name="lds",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("train", "embed", "influence"),
    config=("lds", LdsConfig),
    version=2,  # 2: the noise ceiling is the attenuation bound; removal lists the random control once
    check=_check,
)
