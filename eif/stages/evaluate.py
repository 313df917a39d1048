"""Stage ``evaluate``: retrieval metrics of the trained model on the test classes.

Recall@K (InShop: query -> gallery), NMI and MAP@R on raw embeddings of the eval transform.
Artifact: ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import PositiveInt

from eif.data.transforms import Geometric, Normalization, compose
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.stages.common import load_trained
from eif.utils.errors import EifError
from eif.utils.io import read_json, write_json

log = logging.getLogger(__name__)


class EvaluateConfig(Settings):
    """``evaluate``: test-set retrieval metrics on raw (unnormalised) embeddings."""

    recall_at: tuple[PositiveInt, ...] = (1, 2, 4, 8)
    nmi: bool = True
    map_at_r: bool = True
    # MAP@R distance: euclidean (consistent with Recall@K) or inner_product (the reference's).
    map_metric: Literal["euclidean", "inner_product"] = "euclidean"
    batch_size: PositiveInt = setting(256, unkeyed=SPEED)


class EvaluateSettings(Settings):
    data: dict[str, str]
    evaluate: EvaluateConfig
    normalization: Normalization
    transform: Geometric
    seed: int


def _settings(job: Any, env: Any) -> EvaluateSettings:
    return EvaluateSettings(
        data=env.fingerprints("test", "query", "gallery"),
        evaluate=job.evaluate,
        normalization=job.dataset.transforms.normalization,
        transform=job.dataset.transforms.eval,
        seed=job.seed,
    )


def _check_data(job: Any, data: Any) -> None:
    k = max(job.evaluate.recall_at)
    pool, what = (len(data.gallery), "gallery") if data.gallery is not None else (len(data.test) - 1, "test")
    if k > pool:
        raise EifError(
            f"evaluate.recall_at asks for Recall@{k}, but the {what} set has {pool} candidates per query; "
            f"use at most {pool}"
        )


def test_metrics(model: torch.nn.Module, data: Any, s: EvaluateSettings, run: Run) -> dict[str, float]:
    """Recall@K, NMI and MAP@R of ``model`` on the test classes of ``data`` (a DataBundle); the
    ``clean`` stage measures its re-trained models through this too."""
    from eif.evaluation.metrics import evaluate_embeddings, evaluate_query_gallery
    from eif.training.inference import predict

    tf = compose(s.normalization, s.transform)
    e = s.evaluate
    ks = list(e.recall_at)
    opts = {"with_nmi": e.nmi, "with_map_at_r": e.map_at_r, "map_metric": e.map_metric, "seed": s.seed}

    def embeddings(ds: Any, what: str) -> Any:
        return predict(model, ds.with_transform(tf), e.batch_size, run.device, what, progress=run.progress)[1]

    if data.query is not None and data.gallery is not None:
        q, g = embeddings(data.query, "embed query"), embeddings(data.gallery, "embed gallery")
        return evaluate_query_gallery(q, data.query.labels, g, data.gallery.labels, ks, **opts)
    return evaluate_embeddings(embeddings(data.test, "embed test"), data.test.labels, ks, **opts)


def _compute(s: EvaluateSettings, run: Run, out: Path) -> None:
    model, _, _ = load_trained(run.input("train"), run.device)
    write_json(out / "metrics.json", test_metrics(model, run.data(), s, run))


def _publish(s: EvaluateSettings, run: Run, out: Path) -> None:
    metrics = read_json(out / "metrics.json")
    line = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    log.info("test metrics (%s): %s", run.job.dataset, line)
    run.logger.summary({f"test/{k}": v for k, v in metrics.items()})


STAGE = Stage(
    name="evaluate",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("train",),
    config=("evaluate", EvaluateConfig),
    check_data=_check_data,
)
