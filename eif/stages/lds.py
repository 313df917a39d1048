"""Stage ``lds``: the attribution benchmark. How well does each method's score predict what re-training
on a changed training set does to a confusion (docs/science.md, "Attribution benchmark")?

1. M random alpha-subsets of the training set (shared by all confusions and methods).
2. The head re-trained on each subset (weights 1 in the subset, 0 outside, the class-balanced
   sampler) under each protocol of ``lds.protocols`` (``eif.retrain.protocols``), for each batch-order
   seed, all subsets together: ``warm_start`` from the trained W0 with Table 1's re-training recipe
   (Adam lr 4e-5, clipping), W recorded after each horizon (epochs); ``scratch`` the head (W, b) and
   the proxies from a fresh initialisation with the train stage's recipe, for its epochs.
3. d of every confusion under every re-trained head, averaged over the batch-order seeds.
4. Per method, kind, protocol and horizon: the LDS (mean Spearman over confusions between -sum of scores over
   the subset and the measured d) with a bootstrap interval over subsets and confusions; the noise
   ceiling (:func:`eif.lds.noise_ceiling` of the correlation between the batch orders).
5. Removal: each confusion re-trained without its k most harmful samples by each method, against
   without k random ones (the control, which stands in for the ``random`` method): Δd = d - d0
   (larger = better separated).

Re-training uses the cached eval-transform features (the embed stage): several epochs of augmented
trunk passes would dominate the cost and the ranking question does not need augmentation.

Artifacts: ``lds.json`` (rows, ceilings, removal, settings), ``lds.csv``, ``removal.csv``, ``lds.md``,
``removal.md``,
``measured.npz`` (per kind, d of shape (seeds, horizons, K, M): ``<kind>`` for warm-start,
``<kind>_<protocol>`` for the others), ``subsets.npz``.
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
from eif.losses.base import LossConfig
from eif.retrain.adam import AdamConfig
from eif.retrain.distance import confusion_distances
from eif.retrain.features import batches_from_indices, epoch_batches
from eif.retrain.head import retrain_heads
from eif.retrain.labels import WARM_START, column_title
from eif.retrain.protocols import PROTOCOLS, Context, Recipes
from eif.retrain.scratch import HeadRecipe
from eif.settings import SPEED, Settings, parse, setting
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
    # re-training protocols, side by side (eif.retrain.protocols.PROTOCOLS): warm_start (from the
    # trained W0, Table 1's recipe, for each horizon) and scratch (head and proxies from a fresh
    # initialisation, the train stage's recipe and epochs)
    protocols: tuple[str, ...]
    heads_per_chunk: PositiveInt | None = setting(unkeyed=SPEED)


class LdsSettings(Settings):
    lds: LdsConfig
    optimizer: AdamConfig
    clip_grad_value: PositiveFloat | None
    head: HeadRecipe
    seed: int
    batch: BatchConfig


def _settings(job: Any, env: Any) -> LdsSettings:
    r = job.retrain
    return LdsSettings(
        lds=job.lds,
        optimizer=r.optimizer,
        clip_grad_value=r.clip_grad_value,
        head=HeadRecipe(
            epochs=job.train.epochs,
            lr_head=job.train.optimizer.lr_head,
            lr_proxies=job.train.optimizer.lr_proxies,
            eps=job.train.optimizer.eps,
            weight_decay=job.train.optimizer.weight_decay,
            clip_grad_value=job.train.clip_grad_value,
            max_batches_per_epoch=job.train.max_batches_per_epoch,
        ),
        seed=job.seed,
        batch=job.dataset.batch,
    )


def _check(job: Any) -> None:
    missing = set(job.lds.kinds) - set(job.influence.kinds)
    require(not missing, f"lds.kinds needs {sorted(missing)} in influence.kinds")
    require(len(job.lds.batch_seeds) >= 1, "lds.batch_seeds needs at least one seed")
    protocols = job.lds.protocols
    unknown = [p for p in protocols if p not in PROTOCOLS]
    require(not unknown, f"lds.protocols: unknown {unknown}; known: {sorted(PROTOCOLS)}")
    require(
        len(protocols) >= 1 and len(set(protocols)) == len(protocols),
        f"lds.protocols needs at least one protocol and none twice, got {list(protocols)}",
    )


def _context(s: LdsSettings, run: Run) -> tuple[Context, Any]:
    """The protocols' inputs from the train and embed artifacts, and the trained loss."""
    model, loss, ck = load_trained(run.input("train"), run.device)
    loss.requires_grad_(False)
    loss_cfg = parse(LossConfig, ck["loss_cfg"], "train artifact: loss_cfg")
    num_classes, embedding = int(ck["num_classes"]), model.head.weight.shape[0]
    with np.load(run.input("embed") / "train.npz") as z:
        feats, labels = z["features"], z["labels"]
    ctx = Context(
        w0=model.head.weight.detach(),
        bias=model.head.bias.detach(),
        loss=loss,
        fresh_loss=lambda: loss_cfg.build(num_classes, embedding),
        features=feats,
        labels=labels,
        batch=s.batch,
        device=run.device,
        heads_per_chunk=s.lds.heads_per_chunk,
        progress=run.progress,
    )
    return ctx, loss


def _compute(s: LdsSettings, run: Run, out: Path) -> None:
    cfg = s.lds
    influence = Influence(run.input("influence"))
    methods = influence.methods
    ctx, loss = _context(s, run)
    w0, bias, feats, labels = ctx.w0, ctx.bias, ctx.features, ctx.labels
    with np.load(run.input("embed") / "test.npz") as z:
        test = torch.as_tensor(z["features"], dtype=torch.float32)
    kinds = [k for k in cfg.kinds if influence.has(k, methods[0])]
    pairs = {k: [torch.as_tensor(p) for p in influence.get(k, methods[0]).pairs] for k in kinds}
    n = len(labels)
    member = lds.subsets(n, cfg.subsets, cfg.alpha, s.seed)
    recipes = Recipes(cfg.horizons, s.optimizer, s.clip_grad_value, s.head)
    protocols = [PROTOCOLS[name](recipes) for name in cfg.protocols]
    rows, ceilings, arrays, seconds = [], [], {}, {}
    for proto in protocols:
        horizons = proto.horizons()
        t0 = time.perf_counter()
        measured = {
            k: np.empty((len(cfg.batch_seeds), len(horizons), len(pairs[k]), cfg.subsets)) for k in kinds
        }
        for si, seed in enumerate(cfg.batch_seeds):
            desc = f"lds {proto.title}: batch order {si + 1} of {len(cfg.batch_seeds)}"
            heads = proto.retrain(ctx, torch.as_tensor(member, dtype=torch.float32), seed, desc)
            for hi, (_, ws, b) in enumerate(heads):
                b = b[:, None, :] if b.ndim == 2 else b  # per-head biases broadcast over test samples
                for k in kinds:
                    measured[k][si, hi] = confusion_distances(ws, b, test, pairs[k]).T.numpy()
            log.info(
                "lds %s: batch order %d of %d: %d subsets re-trained for %s epochs (%.1f s so far)",
                proto.title,
                si + 1,
                len(cfg.batch_seeds),
                cfg.subsets,
                horizons,
                time.perf_counter() - t0,
            )
        seconds[proto.name] = time.perf_counter() - t0
        for k in kinds:
            # the warm-start arrays keep their historical names; other protocols' are <kind>_<protocol>
            arrays[k if proto.name == WARM_START else f"{k}_{proto.name}"] = measured[k]
        r, c = _score(s, influence, methods, kinds, member, measured, horizons, proto.name)
        rows += r
        ceilings += c
    t1 = time.perf_counter()
    removal = _removal(s, influence, methods, kinds, pairs, w0, bias, feats, labels, test, loss, run)
    save_npz(out / "measured.npz", **arrays)
    save_npz(out / "subsets.npz", membership=member)
    write_json(
        out / "lds.json",
        {
            "rows": rows,
            "ceilings": ceilings,
            "removal": removal,
            "methods": methods,
            "protocols": list(cfg.protocols),
            "n_train": n,
            "confusions": {k: len(pairs[k]) for k in kinds},
            "seconds": {
                "lds": sum(seconds.values()),
                **{f"lds_{p}": v for p, v in seconds.items()},
                "removal": time.perf_counter() - t1,
            },
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


def _score(
    s: LdsSettings,
    influence: Influence,
    methods: list[str],
    kinds: list[str],
    member: np.ndarray,
    measured: dict[str, np.ndarray],
    horizons: list[int],
    protocol: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(LDS rows, noise-ceiling rows) of one protocol from d measured per kind (seeds, horizons, K, M)."""
    cfg = s.lds
    rows, ceilings = [], []
    for k in kinds:
        target = measured[k].mean(0)  # (horizons, K, M): averaged over batch orders
        for hi, h in enumerate(horizons):
            if len(cfg.batch_seeds) > 1:
                r = lds.lds(measured[k][0, hi], measured[k][1, hi])
                ceilings.append(
                    {
                        "kind": k,
                        "protocol": protocol,
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
                        "protocol": protocol,
                        "horizon": h,
                        "lds": lds.lds(pred, target[hi]),
                        "low": lo,
                        "high": hi_,
                        "per_seed": [lds.lds(pred, measured[k][j, hi]) for j in range(len(cfg.batch_seeds))],
                    }
                )
    return rows, ceilings


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
        "over subsets and confusions). Protocols: warm-start (the head W re-trained from the trained W0 "
        "with Table 1's recipe, for each horizon); from scratch (head and proxies re-trained from a fresh "
        "initialisation with the train stage's recipe and epochs). Noise ceiling: the highest LDS the "
        "batch-order noise of the measured d allows (from the correlation r between two batch orders: "
        "sqrt(S r / (1 + (S - 1) r)) for d averaged over S orders), per protocol and horizon.\n",
    ]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        # columns: each protocol's horizons, protocols side by side in the order they ran
        cols = list(
            dict.fromkeys((r.get("protocol", WARM_START), r["horizon"]) for r in rows if r["kind"] == kind)
        )
        parts += [
            f"\n## LDS, {kind}s\n",
            "| method | " + " | ".join(column_title(p, h) for p, h in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for m in dict.fromkeys(r["method"] for r in rows if r["kind"] == kind):
            by = {
                (r.get("protocol", WARM_START), r["horizon"]): r
                for r in rows
                if r["kind"] == kind and r["method"] == m
            }
            parts.append(
                f"| {m} | "
                + " | ".join(_cell(by[c]["lds"], by[c]["low"], by[c]["high"]) for c in cols)
                + " |"
            )
        ceil = {
            (c.get("protocol", WARM_START), c["horizon"]): c["ceiling"] for c in ceilings if c["kind"] == kind
        }
        if ceil:
            parts.append(
                "| *noise ceiling* | " + " | ".join(_cell(ceil.get(c, float("nan"))) for c in cols) + " |"
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
        "lds: %d subsets x protocols %s (warm-start horizons %s) x %d batch orders in %.1f s; removal %.1f s",
        s.lds.subsets,
        list(s.lds.protocols),
        list(s.lds.horizons),
        len(s.lds.batch_seeds),
        info["seconds"]["lds"],
        info["seconds"]["removal"],
    )
    run.logger.table("lds/table", pd.read_csv(out / "lds.csv"))
    run.logger.table("lds/removal", pd.read_csv(out / "removal.csv"))
    run.logger.summary({f"{_key(r)}/{r['method']}": r["lds"] for r in info["rows"]})
    run.logger.summary({f"{_key(c)}/ceiling": c["ceiling"] for c in info["ceilings"]})


def _key(row: dict[str, Any]) -> str:
    """The run-summary prefix of an LDS row: ``lds/<kind>/h=<horizon>`` for warm-start (as before),
    ``lds/<kind>/<protocol>/h=<horizon>`` for another protocol."""
    protocol = row.get("protocol", WARM_START)
    middle = "" if protocol == WARM_START else f"{protocol}/"
    return f"lds/{row['kind']}/{middle}h={row['horizon']}"


STAGE = Stage(
    name="lds",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("train", "embed", "influence"),
    config=("lds", LdsConfig),
    # 2: the noise ceiling is the attenuation bound; removal lists the random control once.
    # 3: protocols (rows and ceilings name theirs; warm_start is the earlier one)
    version=3,
    check=_check,
)
