"""Stage ``evaluate``: retrieval metrics of the trained model on the test classes.

Recall@K (InShop: query -> gallery), NMI and MAP@R on raw embeddings of the eval transform.
Artifact: ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from eif.stages.base import Run, Stage
from eif.training.test_set import EvaluateConfig, EvaluateSettings, evaluate_settings, test_metrics
from eif.training.trained import load_trained
from eif.utils.errors import EifError
from eif.utils.io import read_json, write_json

log = logging.getLogger(__name__)


def _check_data(job: Any, data: Any) -> None:
    k = max(job.evaluate.recall_at)
    pool, what = (len(data.gallery), "gallery") if data.gallery is not None else (len(data.test) - 1, "test")
    if k > pool:
        raise EifError(
            f"evaluate.recall_at asks for Recall@{k}, but the {what} set has {pool} candidates per query; "
            f"use at most {pool}"
        )


def _compute(s: EvaluateSettings, run: Run, out: Path) -> None:
    model, _, _ = load_trained(run.input("train"), run.device)
    write_json(out / "metrics.json", test_metrics(model, run.data(), s, run.device, run.progress))


def _publish(s: EvaluateSettings, run: Run, out: Path) -> None:
    metrics = read_json(out / "metrics.json")
    line = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    log.info("test metrics (%s): %s", run.job.dataset, line)
    run.logger.summary({f"test/{k}": v for k, v in metrics.items()})


STAGE = Stage(
    name="evaluate",
    settings=evaluate_settings,
    compute=_compute,
    publish=_publish,
    deps=("train",),
    config=("evaluate", EvaluateConfig),
    check_data=_check_data,
    network=lambda job: "eval",
)
