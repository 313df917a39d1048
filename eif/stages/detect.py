"""Stage ``detect``: rank the training set for mislabel inspection and score each ranking (Fig. 2).

Rankings: ``eif`` / ``if`` (descending influence on the detect group: harmful first, helpful last,
as the reference), ``eif_abs`` / ``if_abs`` (descending magnitude), ``random`` (seeded), ``loss``
(descending per-sample training loss from cached features, head and proxies), ``cleanlab_quality``
and ``cleanlab_issues`` (cleanlab on out-of-sample weighted-kNN probabilities, self vote removed).

Artifacts: ``detect.json`` (``skipped`` with the reason on runs without label noise), ``rankings.npz``
(one permutation per ranking), ``detection.csv``/``.md`` (area in [0, 1], recall at 10/20/50%
inspected), ``detection_curves.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from eif.mislabel import detect, knn
from eif.mislabel.artifacts import load_group_scores, load_train
from eif.report.tables import write_table
from eif.stages.base import Context, Stage, plain
from eif.utils.io import read_json, save_npz, write_bytes, write_json

log = logging.getLogger(__name__)


def _fields(cfg: DictConfig) -> dict:
    return {"detect": {k: v for k, v in plain(cfg.detect).items() if k != "loss_batch_size"}}


def per_sample_losses(ctx: Context, features: np.ndarray, labels: np.ndarray, batch_size: int) -> np.ndarray:
    """Training loss (N,) of every sample under the trained head and proxies (eval mode, no grad)."""
    from eif.stages.common import load_trained

    model, loss, _ = load_trained(ctx.require("train"), ctx.cfg, ctx.device)
    out = []
    with torch.no_grad():
        for s in range(0, len(labels), batch_size):
            f = torch.from_numpy(features[s : s + batch_size]).to(ctx.device)
            y = torch.from_numpy(labels[s : s + batch_size]).to(ctx.device)
            out.append(loss.per_sample(model.head(f), y).double().cpu().numpy())
    return np.concatenate(out)


def _compute(ctx: Context, out: Path) -> None:
    from eif.report.figures import detection_curves  # matplotlib: imported only when drawing

    cfg = ctx.cfg.detect
    tr = load_train(ctx.require("embed"))
    n = tr.labels.size
    if tr.flipped.size == 0:
        write_json(
            out / "detect.json",
            {
                "skipped": True,
                "reason": f"no label noise in this run (noise={ctx.cfg.noise.name}): nothing to detect",
            },
        )
        return
    scores = load_group_scores(ctx.require("influence"), int(cfg.group))
    rankings: dict[str, np.ndarray] = {}
    for method, s in scores.items():
        rankings[method] = detect.descending(s)
        rankings[f"{method}_abs"] = detect.descending(np.abs(s))
    rankings["random"] = detect.random_ranking(n, int(cfg.random_seed))
    losses = per_sample_losses(ctx, tr.features, tr.labels, int(cfg.loss_batch_size))
    rankings["loss"] = detect.descending(losses)
    _, probs, k = knn.recommend(tr.embeddings, tr.labels, tr.num_classes)
    rankings.update(detect.cleanlab_rankings(tr.labels, probs))
    table, curves = detect.summarise(rankings, tr.flipped, n)
    save_npz(out / "rankings.npz", **rankings)
    write_table(table, out, "detection")
    title = f"{ctx.cfg.dataset.name}, {ctx.cfg.loss.name}: {tr.flipped.size} of {n} labels flipped"
    areas = dict(zip(table.ranking, table.area))
    write_bytes(out / "detection_curves.png", detection_curves(curves, areas, title))
    write_json(
        out / "detect.json",
        {
            "skipped": False,
            "group": int(cfg.group),
            "n_train": n,
            "n_flipped": int(tr.flipped.size),
            "cleanlab_knn_k": k,
        },
    )


def _publish(ctx: Context, out: Path) -> None:
    info = read_json(out / "detect.json")
    if info["skipped"]:
        log.warning("detect skipped: %s", info["reason"])
        print(f"detect: skipped, {info['reason']}", flush=True)
        return
    table = pd.read_csv(out / "detection.csv")
    print(
        f"mislabel detection ({info['n_flipped']} flips in {info['n_train']}):\n"
        + table.to_string(index=False, float_format="%.3f"),
        flush=True,
    )
    ctx.logger.table("detect/detection", table)
    ctx.logger.image("detect/detection_curves", out / "detection_curves.png")
    ctx.logger.summary({f"detect/area_{r}": a for r, a in zip(table.ranking, table.area)})


STAGE = Stage(
    name="detect", deps=("train", "embed", "influence"), fields=_fields, compute=_compute, publish=_publish
)
