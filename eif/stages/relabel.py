"""Stage ``relabel``: Algorithm 1's weighted-kNN label recommendations and their accuracy (Table 2).

The queried set is the harmful set of the detect group (training samples with a positive
``relabel.method`` score, Algorithm 1 line 1) or all samples. Artifacts:

- ``recommendations.npz``: ``queries`` (Q,), ``hard`` (Q,) argmax labels, ``soft`` (Q, C) vote shares.
- ``review.csv``: for a human: sample id, image path (``index:<i>`` for in-memory data), current label,
  recommended label and its probability, the score that flagged it; most harmful first.
- ``relabel.json``: k, sizes, accuracy on the true flips inside the queried set, counted ``strict``
  (top-1 == clean label) and with the reference's ``second_label`` rule (a top-1 equal to the noisy
  label is replaced by the 2nd label), and the measured wall time of the kNN block.
- ``runtime.csv``/``.md``: Table 3 row per method, detection time (from the influence artifact's
  ``influence.json``: scoring all confusion groups together) and recommendation
  time (the kNN block measured here).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import PositiveInt

from eif.data.features import FeatureSet
from eif.influence.artifacts import Influence
from eif.mislabel import knn, relabel
from eif.mislabel.artifacts import load_train
from eif.report.html import thumbnail
from eif.settings import Settings
from eif.stages.base import Run, Stage
from eif.tables.format import write_table
from eif.utils.errors import require
from eif.utils.io import read_json, save_npz, write_json, write_text

log = logging.getLogger(__name__)


class RelabelConfig(Settings):
    """``relabel``: Algorithm 1's queries (``harmful``: positive ``method`` scores on the detect group;
    ``all``: every training sample) and ``k`` neighbours (None: the lower median class count)."""

    queries: Literal["harmful", "all"] = "harmful"
    method: str = "eif"
    k: PositiveInt | None = None


class RelabelSettings(Settings):
    relabel: RelabelConfig
    group: int


def _settings(job: Any, env: Any) -> RelabelSettings:
    return RelabelSettings(relabel=job.relabel, group=job.detect.group)


def _check(job: Any) -> None:
    require(
        job.relabel.method in job.methods,
        f"relabel.method={job.relabel.method} is not among the job's methods {sorted(job.methods)}",
    )
    require("group" in job.influence.kinds, "relabel reads group influence: influence.kinds needs group")


def _compute(s: RelabelSettings, run: Run, out: Path) -> None:
    cfg = s.relabel
    tr = load_train(run.input("embed"))
    infl = run.input("influence")
    influence = Influence(infl)
    scores = influence.group_scores(s.group)
    require(
        str(cfg.method) in scores,
        f"relabel.method={cfg.method!r}, but the influence stage scored {', '.join(scores)}",
    )
    flag = scores[str(cfg.method)]
    queries = np.flatnonzero(flag > 0) if cfg.queries == "harmful" else np.arange(tr.labels.size)
    t0 = time.perf_counter()
    hard, soft, k = knn.recommend(tr.embeddings, tr.labels, tr.num_classes, queries=queries, k=cfg.k)
    knn_s = time.perf_counter() - t0
    save_npz(out / "recommendations.npz", queries=queries, hard=hard, soft=soft)
    paths = read_json(run.input("embed") / "embed.json").get("paths", {}).get("train")
    review = relabel.review_table(queries, soft, tr.labels, paths, flag[queries])
    write_text(out / "review.csv", review.to_csv(index=False))
    acc = (
        relabel.relabel_accuracy(soft, queries, tr.labels, tr.clean_labels, tr.flipped)
        if tr.flipped.size
        else {"flips_in_set": 0, "strict": None, "second_label": None}
    )
    write_json(
        out / "relabel.json",
        {
            "k": k,
            "queries": str(cfg.queries),
            "method": str(cfg.method),
            "n_queries": int(queries.size),
            "n_train": int(tr.labels.size),
            "n_flipped": int(tr.flipped.size),
            "changes_label": int((hard != tr.labels[queries]).sum()),
            "accuracy": acc,
            "knn_seconds": knn_s,
        },
    )
    det = influence.seconds("group")
    runtime = pd.DataFrame(
        [
            {
                "method": m.upper(),
                "detection_s": det.get(m, float("nan")),
                "recommendation_s": knn_s if m == cfg.method else float("nan"),
            }
            for m in scores
        ]
    )
    write_table(runtime, out, "runtime")


def review_media(review: pd.DataFrame, run: Run, px: int = 64) -> pd.DataFrame:
    """``review`` for W&B: each row's training image (a thumbnail of at most ``px`` pixels; none for
    feature vectors, which have no image) and the class names of its current and recommended labels
    next to the ids."""
    names = read_json(run.input("embed") / "embed.json")["train_class_names"]
    train = run.data().train
    out = review.copy()
    if not isinstance(train, FeatureSet):
        out.insert(1, "thumbnail", [thumbnail(train.load(int(i)), px) for i in review.sample_id])
    out.insert(
        list(out.columns).index("current_label"), "current_class", [names[y] for y in review.current_label]
    )
    out.insert(
        list(out.columns).index("recommended_label"),
        "recommended_class",
        [names[y] for y in review.recommended_label],
    )
    return out


def _publish(s: RelabelSettings, run: Run, out: Path) -> None:
    info = read_json(out / "relabel.json")
    acc = info["accuracy"]
    line = (
        f"relabel: {info['n_queries']} {info['queries']} samples queried (k={info['k']}), "
        f"{info['changes_label']} would change label; kNN {info['knn_seconds']:.2f} s"
    )
    if acc["flips_in_set"]:
        line += (
            f"; accuracy on the {acc['flips_in_set']} true flips among them: "
            f"strict {acc['strict']:.4f}, "
            f"second-label rule {acc['second_label']:.4f}"
        )
    log.info("%s", line)
    summary = {"relabel/n_queries": info["n_queries"], "relabel/knn_seconds": info["knn_seconds"]}
    if acc["flips_in_set"]:
        summary.update({"relabel/acc_strict": acc["strict"], "relabel/acc_second_label": acc["second_label"]})
    run.logger.summary(summary)
    if run.logger.active:
        run.logger.table("relabel/review", review_media(pd.read_csv(out / "review.csv").head(500), run))
    run.logger.table("relabel/runtime", pd.read_csv(out / "runtime.csv"))


STAGE = Stage(
    name="relabel",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("embed", "influence"),
    config=("relabel", RelabelConfig),
    check=_check,
)
