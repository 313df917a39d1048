"""Retrieval metrics of a model on the test classes: what the ``evaluate`` stage measures, and the
``clean`` stage measures again on every re-trained model."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import PositiveInt

from eif.data.transforms import Geometric, Normalization, compose
from eif.evaluation.metrics import evaluate_embeddings, evaluate_query_gallery
from eif.models.embedder import Embedder
from eif.settings import SPEED, Settings, setting
from eif.training.inference import predict


class EvaluateConfig(Settings):
    """``evaluate``: test-set retrieval metrics on raw (unnormalised) embeddings (values:
    conf/evaluate/default.yaml)."""

    recall_at: tuple[PositiveInt, ...]
    nmi: bool
    map_at_r: bool
    # MAP@R distance: euclidean (consistent with Recall@K) or inner_product (the reference's).
    map_metric: Literal["euclidean", "inner_product"]
    batch_size: PositiveInt = setting(unkeyed=SPEED)


class EvaluateSettings(Settings):
    """What the test metrics depend on besides the model: the test splits' fingerprints, the metrics,
    the eval transform and the seed (k-means for NMI)."""

    data: dict[str, str]
    evaluate: EvaluateConfig
    normalization: Normalization
    transform: Geometric
    seed: int


def evaluate_settings(job: Any, env: Any) -> EvaluateSettings:
    """:class:`EvaluateSettings` of ``job`` (``env``: the pipeline's ``Env``, for the fingerprints)."""
    return EvaluateSettings(
        data=env.fingerprints("test", "query", "gallery"),
        evaluate=job.evaluate,
        normalization=job.dataset.transforms.normalization,
        transform=job.dataset.transforms.eval,
        seed=job.seed,
    )


def test_metrics(
    model: Embedder, data: Any, s: EvaluateSettings, device: torch.device, progress: bool
) -> dict[str, float]:
    """Recall@K (InShop: query -> gallery), NMI and MAP@R of ``model`` on the test classes of ``data``
    (a DataBundle), on embeddings of the eval transform."""
    tf = compose(s.normalization, s.transform)
    e = s.evaluate
    ks = list(e.recall_at)
    opts = {"with_nmi": e.nmi, "with_map_at_r": e.map_at_r, "map_metric": e.map_metric, "seed": s.seed}

    def embeddings(ds: Any, what: str) -> Any:
        return predict(model, ds.with_transform(tf), e.batch_size, device, what, progress=progress)[1]

    if data.query is not None and data.gallery is not None:
        q, g = embeddings(data.query, "embed query"), embeddings(data.gallery, "embed gallery")
        return evaluate_query_gallery(q, data.query.labels, g, data.gallery.labels, ks, **opts)
    return evaluate_embeddings(embeddings(data.test, "embed test"), data.test.labels, ks, **opts)
