"""Stage ``evaluate``: retrieval metrics of the trained model on the test classes.

Recall@K (InShop: query -> gallery), NMI and MAP@R on raw embeddings of the eval transform.
Artifact: ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from eif.stages.base import Context, Stage, plain
from eif.stages.common import load_trained
from eif.utils.io import read_json, write_json

log = logging.getLogger(__name__)


def _fields(cfg: DictConfig) -> dict:
    return {
        "evaluate": {k: v for k, v in plain(cfg.evaluate).items() if k != "batch_size"},
        "eval_transform": plain(cfg.dataset.transforms.eval),
    }


def _compute(ctx: Context, out: Path) -> None:
    from eif.data.transforms import build_transform
    from eif.evaluation.metrics import evaluate_embeddings, evaluate_query_gallery
    from eif.training.inference import predict

    cfg = ctx.cfg
    model, _, _ = load_trained(ctx.require("train"), cfg, ctx.device)
    data = ctx.data()
    tf = build_transform(cfg.dataset.transforms, "eval")
    ecfg = cfg.evaluate
    ks = [int(k) for k in ecfg.recall_at]
    bs = int(ecfg.batch_size)
    if data.query is not None and data.gallery is not None:
        _, q = predict(model, data.query.with_transform(tf), bs, ctx.device, desc="embed query")
        _, g = predict(model, data.gallery.with_transform(tf), bs, ctx.device, desc="embed gallery")
        metrics = evaluate_query_gallery(
            q,
            data.query.labels,
            g,
            data.gallery.labels,
            ks,
            with_nmi=bool(ecfg.nmi),
            with_map_at_r=bool(ecfg.map_at_r),
            map_metric=str(ecfg.map_metric),
            seed=int(cfg.seed),
        )
    else:
        _, emb = predict(model, data.test.with_transform(tf), bs, ctx.device, desc="embed test")
        metrics = evaluate_embeddings(
            emb,
            data.test.labels,
            ks,
            with_nmi=bool(ecfg.nmi),
            with_map_at_r=bool(ecfg.map_at_r),
            map_metric=str(ecfg.map_metric),
            seed=int(cfg.seed),
        )
    write_json(out / "metrics.json", metrics)


def _publish(ctx: Context, out: Path) -> None:
    metrics = read_json(out / "metrics.json")
    line = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    log.info("test metrics: %s", line)
    print(f"test metrics ({ctx.cfg.dataset.name}): {line}", flush=True)
    ctx.logger.summary({f"test/{k}": v for k, v in metrics.items()})


STAGE = Stage(name="evaluate", deps=("train",), fields=_fields, compute=_compute, publish=_publish)
