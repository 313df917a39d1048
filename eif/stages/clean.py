"""Stage ``clean``: close the loop. Correct training labels, re-train the whole model with the same
recipe and seed, and measure what it changed on the test classes (docs/mislabel.md, "Cleaning").

Two ways to decide the labels:

- ``clean.labels=<csv>``: the corrected-label file the review page exports (columns ``id``,
  ``old_label_id``, ``new_label_id``, ``decision``): accept/change set the new label, reject keeps it.
  The file's digest is part of the store key; a file from another run is refused.
- otherwise, for each of ``clean.cleaners``: inspect the ``budget`` (a fraction of the training set)
  top-ranked samples of that ranking of the ``detect`` stage (every method of the job, e.g. eif, and
  its magnitude eif_abs; loss, cleanlab_quality, cleanlab_issues, random) and accept their
  weighted-kNN recommendation (Algorithm 1); ``oracle`` restores every true label. Runs with label
  noise only.

Every variant is one full re-training (the ``train`` stage's recipe: :func:`eif.training.fit.fit`) and
one evaluation (:func:`eif.training.test_set.test_metrics`); the noisy model is the ``train`` stage's own.
Each variant's result is written as soon as it is done, so a killed run resumes with the next one.

Artifacts: ``clean.json`` (rows, budget, settings), ``clean.csv``/``.md`` (one row per variant:
labels changed, flips fixed, clean labels broken, Recall@K, MAP@R, NMI), ``labels.npz`` (the
training labels of every variant), ``variants/<name>.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from eif.logging.run_logger import Prefixed
from eif.mislabel import clean, knn, review_file
from eif.mislabel.artifacts import load_train
from eif.settings import Settings, setting
from eif.stages.base import Run, Stage
from eif.tables.format import write_table
from eif.training.fit import TrainSettings, fit, train_settings
from eif.training.test_set import EvaluateSettings, evaluate_settings, test_metrics
from eif.utils.errors import require
from eif.utils.io import read_json, save_npz, write_json, write_text

log = logging.getLogger(__name__)
BASELINES = ("oracle", "loss", "cleanlab_quality", "cleanlab_issues", "random")


class CleanConfig(Settings):
    """``clean``: which corrected labels to re-train on (module doc)."""

    # a review page export (CSV); null = compare the automatic cleaners below
    labels: str | None
    cleaners: tuple[str, ...]
    # samples inspected per cleaner, as a fraction of the training set
    budget: float = setting(gt=0, le=1)


class CleanSettings(Settings):
    clean: CleanConfig
    review: str | None = Field(description="content digest of clean.labels")
    train: TrainSettings
    evaluate: EvaluateSettings


def _settings(job: Any, env: Any) -> CleanSettings:
    labels = job.clean.labels
    return CleanSettings(
        clean=job.clean,
        review=None if labels is None else env.file_digest(labels),
        train=train_settings(job, env),
        evaluate=evaluate_settings(job, env),
    )


def _deps(job: Any) -> tuple[str, ...]:
    auto = job is None or job.clean.labels is None
    return ("train", "evaluate", "embed", "detect") if auto else ("train", "evaluate")


def _check(job: Any) -> None:
    c = job.clean
    require(
        job.model.checkpoint is None,
        "clean re-trains the model with its recipe: model.checkpoint must be null",
    )
    if c.labels is not None:
        require(Path(c.labels).is_file(), f"clean.labels: {c.labels} does not exist")
        review_file.read_review(Path(c.labels))  # the whole file parses before the data is read
        return
    require(
        job.noise.fraction > 0,
        "clean compares cleaners on known label noise: choose noise=p01/p05/p10, "
        "or give clean.labels=<review csv>",
    )
    valid = [*BASELINES, *(f"{m}{a}" for m in job.methods for a in ("", "_abs"))]
    bad = [n for n in c.cleaners if n not in valid]
    require(not bad, f"clean.cleaners: {bad} is not a ranking of this job; choose from {', '.join(valid)}")


def _check_data(job: Any, data: Any) -> None:
    """A review file fits this run's training set (ids, labels, class names) before any compute."""
    if job.clean.labels is not None:
        review_file.validate_review(
            Path(job.clean.labels), data.train.labels, data.num_train_classes, data.train_class_names
        )


def _check_keys(job: Any, keys: Mapping[str, str]) -> None:
    """A review file exported by another run (another model) is refused with the command that fits it."""
    if job.clean.labels is not None:
        path = Path(job.clean.labels)
        review_file.check_origin(review_file.read_review(path), path, keys)


def _variants(s: CleanSettings, run: Run, noisy: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Training labels (N,) of every variant to re-train."""
    cfg = s.clean
    if cfg.labels is not None:
        review = clean.from_review(Path(cfg.labels), noisy, num_classes)
        log.info(
            "clean: review %s: %s; %d labels change",
            cfg.labels,
            ", ".join(f"{v} {k}" for k, v in review.counts.items()),
            review.changed.size,
        )
        return {"review": review.labels}
    tr = load_train(run.input("embed"))
    require(np.array_equal(tr.labels, noisy), "clean: the embed stage's labels differ from the data's")
    budget = max(1, int(round(cfg.budget * noisy.size)))
    out = {}
    with np.load(run.input("detect") / "rankings.npz") as z:
        rankings = {k: z[k] for k in z.files}
    for name in cfg.cleaners:
        if name == "oracle":
            out[name] = tr.clean_labels.copy()
            continue
        require(name in rankings, f"clean: the detect stage has no ranking {name!r} ({', '.join(rankings)})")
        top = rankings[name][:budget]
        hard, _, _ = knn.recommend(tr.embeddings, tr.labels, num_classes, queries=top)
        out[name] = clean.from_ranking(noisy, top, hard, budget)
    return out


def _compute(s: CleanSettings, run: Run, out: Path) -> None:
    data = run.data()
    noisy, truth = data.train.labels, data.train.clean_labels
    known = not np.array_equal(noisy, truth) or s.clean.labels is None
    variants = _variants(s, run, noisy, data.num_train_classes)
    save_npz(out / "labels.npz", noisy=noisy, **variants)
    (out / "variants").mkdir(exist_ok=True)
    base = read_json(run.input("evaluate") / "metrics.json")
    rows = [{"variant": "noisy", **clean.outcome(noisy, noisy, truth), **base}]
    for i, (name, labels) in enumerate(variants.items()):
        done = out / "variants" / f"{name}.json"
        if not done.is_file():
            log.info("clean: re-training on the labels of %s (%d of %d)", name, i + 1, len(variants))
            t0 = time.perf_counter()
            train_set = data.train.with_labels(labels)
            model, _, history = fit(
                s.train,
                train_set,
                data.num_train_classes,
                run.device,
                Prefixed(run.logger, f"clean/{name}"),
                run.progress,
                out / "ckpt" / name,
            )
            metrics = test_metrics(model, data, s.evaluate, run.device, run.progress)
            write_json(done, {"metrics": metrics, "final_loss": history[-1]["loss"] if history else None})
            log.info(
                "clean: %s done (%d of %d) in %.0f s: %s",
                name,
                i + 1,
                len(variants),
                time.perf_counter() - t0,
                "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
            )
        rows.append({"variant": name, **clean.outcome(labels, noisy, truth), **read_json(done)["metrics"]})
    table = pd.DataFrame(rows)
    if not known:  # no true labels to compare with (a review of un-noised data)
        table[["flips_fixed", "clean_broken", "flips_left"]] = np.nan
    write_table(table, out, "clean")
    write_json(
        out / "clean.json",
        {
            "rows": table.replace({np.nan: None}).to_dict("records"),
            "budget": None if s.clean.labels else max(1, int(round(s.clean.budget * noisy.size))),
            "n_train": int(noisy.size),
            "n_flipped": int((noisy != truth).sum()),
            "settings": s.clean.model_dump(mode="json"),
        },
    )
    write_text(out / "clean.md", markdown(table, noisy.size, int((noisy != truth).sum())))


def markdown(table: pd.DataFrame, n: int, flipped: int) -> str:
    metrics = [c for c in table.columns if c.startswith(("recall@", "map@r", "nmi"))]
    head = ["labels from", "changed", "flips fixed", "clean broken", *metrics]
    lines = [
        f"# Cleaning: re-trained on corrected labels ({flipped} of {n} training labels flipped)\n",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for r in table.to_dict("records"):
        counts = [
            "" if r[k] is None or r[k] != r[k] else str(int(r[k]))
            for k in ("changed", "flips_fixed", "clean_broken")
        ]
        lines.append("| " + " | ".join([r["variant"], *counts, *(f"{r[m]:.4f}" for m in metrics)]) + " |")
    return "\n".join(lines) + "\n"


def _publish(s: CleanSettings, run: Run, out: Path) -> None:
    print((out / "clean.md").read_text(), flush=True)
    table = pd.read_csv(out / "clean.csv")
    run.logger.table("clean/table", table)
    for r in table.to_dict("records"):
        run.logger.summary(
            {f"clean/{r['variant']}/{k}": v for k, v in r.items() if k != "variant" and v == v}
        )


STAGE = Stage(
    name="clean",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=_deps,
    config=("clean", CleanConfig),
    version=2,  # 2: re-training checkpoints under ckpt/ (scratch), no longer inside the artifact
    check=_check,
    check_data=_check_data,
    check_keys=_check_keys,
)
