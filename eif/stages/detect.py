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
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import NonNegativeInt, PositiveInt

from eif.influence.artifacts import Influence
from eif.mislabel import detect, knn
from eif.mislabel.artifacts import load_train
from eif.report.figures import detection_curves
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.tables.format import write_table
from eif.training.trained import load_trained
from eif.utils.errors import require
from eif.utils.io import read_json, save_npz, write_bytes, write_json

log = logging.getLogger(__name__)


class DetectConfig(Settings):
    """``detect``: rank the training set for mislabel inspection (runs with label noise only).

    ``group``: whose influence scores rank it (0 = the test class with most wrong 1-NN)."""

    group: NonNegativeInt = 0
    random_seed: int = 0
    loss_batch_size: PositiveInt = setting(4096, unkeyed=SPEED)


def _settings(job: Any, env: Any) -> DetectConfig:
    return job.detect


def _check(job: Any) -> None:
    require("group" in job.influence.kinds, "detect ranks by group influence: influence.kinds needs group")


def per_sample_losses(run: Run, features: np.ndarray, labels: np.ndarray, batch_size: int) -> np.ndarray:
    """Training loss (N,) of every sample under the trained head and proxies (eval mode, no grad)."""
    model, loss, _ = load_trained(run.input("train"), run.device)
    out = []
    with torch.no_grad():
        for s in range(0, len(labels), batch_size):
            f = torch.from_numpy(features[s : s + batch_size]).to(run.device)
            y = torch.from_numpy(labels[s : s + batch_size]).to(run.device)
            out.append(loss.per_sample(model.head(f), y).double().cpu().numpy())
    return np.concatenate(out)


def _compute(cfg: DetectConfig, run: Run, out: Path) -> None:
    tr = load_train(run.input("embed"))
    n = tr.labels.size
    if tr.flipped.size == 0:
        write_json(
            out / "detect.json",
            {
                "skipped": True,
                "reason": "no label noise in this run (noise.fraction=0): nothing to detect",
            },
        )
        return
    scores = Influence(run.input("influence")).group_scores(cfg.group)
    rankings: dict[str, np.ndarray] = {}
    for method, s in scores.items():
        rankings[method] = detect.descending(s)
        rankings[f"{method}_abs"] = detect.descending(np.abs(s))
    rankings["random"] = detect.random_ranking(n, cfg.random_seed)
    losses = per_sample_losses(run, tr.features, tr.labels, cfg.loss_batch_size)
    rankings["loss"] = detect.descending(losses)
    _, probs, k = knn.recommend(tr.embeddings, tr.labels, tr.num_classes)
    rankings.update(detect.cleanlab_rankings(tr.labels, probs))
    table, curves = detect.summarise(rankings, tr.flipped, n)
    save_npz(out / "rankings.npz", **rankings)
    write_table(table, out, "detection")
    title = f"{tr.flipped.size} of {n} training labels flipped"
    areas = dict(zip(table.ranking, table.area))
    write_bytes(out / "detection_curves.png", detection_curves(curves, areas, title))
    write_json(
        out / "detect.json",
        {
            "skipped": False,
            "group": cfg.group,
            "n_train": n,
            "n_flipped": int(tr.flipped.size),
            "cleanlab_knn_k": k,
        },
    )


def _publish(cfg: DetectConfig, run: Run, out: Path) -> None:
    info = read_json(out / "detect.json")
    if info["skipped"]:
        log.warning("detect skipped: %s", info["reason"])
        return
    table = pd.read_csv(out / "detection.csv")
    print(
        f"mislabel detection ({info['n_flipped']} flips in {info['n_train']}):\n"
        + table.to_string(index=False, float_format="%.3f"),
        flush=True,
    )
    run.logger.table("detect/detection", table)
    run.logger.image("detect/detection_curves", out / "detection_curves.png")
    run.logger.summary({f"detect/area_{r}": a for r, a in zip(table.ranking, table.area)})


STAGE = Stage(
    name="detect",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("train", "embed", "influence"),
    config=("detect", DetectConfig),
    check=_check,
)
