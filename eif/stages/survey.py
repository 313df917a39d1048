"""Stage ``survey``: the field study (paper Table 5) on the run's training set.

Every training sample is relabelled by the weighted kNN (Algorithm 1, no influence needed, as the
reference); classes are sorted into centralized / diversified / individual / others by
``survey.rule`` (``reference``: 0.9 p rule; ``entropy``: the paper's th_H). Artifacts:
``table5.csv``/``.md`` (counts), ``classes.csv`` (per-class p, top other class, entropy, category),
``relabel_all.npz`` (``hard`` (N,) recommended labels), ``survey.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from eif.mislabel import knn, survey
from eif.mislabel.artifacts import load_train
from eif.report.tables import write_table
from eif.stages.base import Context, Stage, plain
from eif.utils.io import read_json, save_npz, write_bytes, write_json, write_text

log = logging.getLogger(__name__)


def _fields(cfg: DictConfig) -> dict:
    return {"survey": plain(cfg.survey)}


def _compute(ctx: Context, out: Path) -> None:
    from eif.report.figures import bar_counts  # matplotlib: imported only when drawing

    cfg = ctx.cfg.survey
    tr = load_train(ctx.require("embed"))
    k = None if cfg.k is None else int(cfg.k)
    hard, _, k = knn.recommend(tr.embeddings, tr.labels, tr.num_classes, k=k)
    details = survey.class_details(tr.labels, hard, tr.num_classes)
    details["category"] = survey.categorise(details, str(cfg.rule), float(cfg.th_h))
    t5 = survey.table5(details, details.category)
    t5.insert(0, "dataset", str(ctx.cfg.dataset.name))
    t5.insert(1, "rule", str(cfg.rule))
    save_npz(out / "relabel_all.npz", hard=hard)
    write_text(out / "classes.csv", details.to_csv(index=False))
    write_table(t5, out, "table5")
    counts = {c: int(t5[c].iloc[0]) for c in survey.CATEGORIES}
    write_bytes(out / "table5.png", bar_counts(counts, f"{ctx.cfg.dataset.name}: classes by relabel pattern"))
    write_json(
        out / "survey.json",
        {
            "k": k,
            "rule": str(cfg.rule),
            "n_train": int(tr.labels.size),
            "relabelled": int((hard != tr.labels).sum()),
        },
    )


def _publish(ctx: Context, out: Path) -> None:
    t5 = pd.read_csv(out / "table5.csv")
    print("field study (Table 5):\n" + t5.to_string(index=False, float_format="%.4f"), flush=True)
    ctx.logger.table("survey/table5", t5)
    ctx.logger.table("survey/classes", pd.read_csv(out / "classes.csv"))
    ctx.logger.image("survey/table5", out / "table5.png")
    info = read_json(out / "survey.json")
    ctx.logger.summary(
        {
            "survey/relabelled": info["relabelled"],
            **{f"survey/{c}": int(t5[c].iloc[0]) for c in survey.CATEGORIES},
        }
    )
    log.info("survey: %d of %d training samples would change label", info["relabelled"], info["n_train"])


STAGE = Stage(name="survey", deps=("embed",), fields=_fields, compute=_compute, publish=_publish)
