"""Stage ``survey``: the field study (paper Table 5) on the run's training set.

Every training sample is relabelled by the weighted kNN (Algorithm 1, no influence needed, as the
reference); classes are sorted into centralized / diversified / individual / others by
``survey.rule`` (``reference``: 0.9 p rule; ``entropy``: the paper's th_H). Artifacts:
``table5.csv``/``.md`` (counts), ``classes.csv`` (per class: its name, p, the top other class and its
name, entropy, category),
``relabel_all.npz`` (``hard`` (N,) recommended labels), ``survey.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import PositiveFloat, PositiveInt

from eif.mislabel import knn, survey
from eif.mislabel.artifacts import load_train
from eif.report.figures import bar_counts
from eif.settings import Settings
from eif.stages.base import Run, Stage
from eif.tables.format import write_table
from eif.utils.io import read_json, save_npz, write_bytes, write_json, write_text

log = logging.getLogger(__name__)


class SurveyConfig(Settings):
    """``survey``: the field study (Table 5). ``rule``: reference (the 0.9 p rule of the code behind
    Table 5) or entropy (the paper's text: relabel-class entropy < ``th_h``); ``k`` as in relabel."""

    rule: Literal["reference", "entropy"] = "reference"
    th_h: PositiveFloat = 0.35
    k: PositiveInt | None = None


def _settings(job: Any, env: Any) -> SurveyConfig:
    return job.survey


def _compute(cfg: SurveyConfig, run: Run, out: Path) -> None:
    tr = load_train(run.input("embed"))
    k = cfg.k
    hard, _, k = knn.recommend(tr.embeddings, tr.labels, tr.num_classes, k=k)
    details = survey.class_details(tr.labels, hard, tr.num_classes)
    names = read_json(run.input("embed") / "embed.json")["train_class_names"]  # e.g. the class folders
    details.insert(1, "name", [names[c] for c in details["class"]])
    details.insert(
        list(details.columns).index("top_other") + 1,
        "top_other_name",
        [names[c] if c >= 0 else "" for c in details["top_other"]],
    )
    details["category"] = survey.categorise(details, cfg.rule, cfg.th_h)
    t5 = survey.table5(details, details.category)
    t5.insert(0, "rule", cfg.rule)
    save_npz(out / "relabel_all.npz", hard=hard)
    write_text(out / "classes.csv", details.to_csv(index=False))
    write_table(t5, out, "table5")
    counts = {c: int(t5[c].iloc[0]) for c in survey.CATEGORIES}
    write_bytes(out / "table5.png", bar_counts(counts, "training classes by relabel pattern"))
    write_json(
        out / "survey.json",
        {
            "k": k,
            "rule": cfg.rule,
            "n_train": int(tr.labels.size),
            "relabelled": int((hard != tr.labels).sum()),
        },
    )


def _publish(cfg: SurveyConfig, run: Run, out: Path) -> None:
    t5 = pd.read_csv(out / "table5.csv")
    t5.insert(0, "dataset", run.job.dataset)
    print("field study (Table 5):\n" + t5.to_string(index=False, float_format="%.4f"), flush=True)
    run.logger.table("survey/table5", t5)
    run.logger.table("survey/classes", pd.read_csv(out / "classes.csv"))
    run.logger.image("survey/table5_counts", out / "table5.png")
    info = read_json(out / "survey.json")
    run.logger.summary(
        {
            "survey/relabelled": info["relabelled"],
            **{f"survey/{c}": int(t5[c].iloc[0]) for c in survey.CATEGORIES},
        }
    )
    log.info("survey: %d of %d training samples would change label", info["relabelled"], info["n_train"])


STAGE = Stage(
    name="survey",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("embed",),
    config=("survey", SurveyConfig),
    version=2,
)
