"""Stage ``embed``: cache trunk features and head embeddings for train and test, with labels.

Artifacts (numpy ``.npz``, loadable without this project):

- ``train.npz``: ``features`` float32 (N, D), ``embeddings`` float32 (N, E), ``labels`` int64 (N,)
  (the labels training saw, noisy where noise was injected), ``clean_labels`` int64 (N,),
  ``flipped`` int64 (indices of mislabelled samples).
- ``test.npz``: the same for the pooled test set (InShop: query + gallery); ``query.npz`` and
  ``gallery.npz`` for InShop.
- ``embed.json``: sizes, the transform used, and the dataset's class names.

All influence work (mine, EIF, IF, re-training) runs on these features and the head alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from eif.stages.base import Context, Stage, plain
from eif.stages.common import load_trained
from eif.utils.io import read_json, save_npz, write_json

log = logging.getLogger(__name__)


def _fields(cfg: DictConfig) -> dict:
    which = str(cfg.embed.transform)
    return {"transform": which, "transform_cfg": plain(cfg.dataset.transforms[which])}


def _compute(ctx: Context, out: Path) -> None:
    from eif.data.transforms import build_transform
    from eif.training.inference import predict

    cfg = ctx.cfg
    model, _, _ = load_trained(ctx.require("train"), cfg, ctx.device)
    data = ctx.data()
    which = str(cfg.embed.transform)
    tf = build_transform(cfg.dataset.transforms, which)
    # Uncropped images differ in size, so the reference embeds them one at a time.
    variable = str(cfg.dataset.transforms[which].name) == "resize"
    bs = 1 if variable else int(cfg.embed.batch_size)
    splits = {"train": data.train, "test": data.test}
    if data.query is not None:
        splits.update(query=data.query, gallery=data.gallery)
    sizes = {}
    for name, ds in splits.items():
        feats, embs = predict(model, ds.with_transform(tf), bs, ctx.device, desc=f"embed {name}")
        extra = {"flipped": np.asarray(data.noise.flipped, np.int64)} if name == "train" else {}
        save_npz(
            out / f"{name}.npz",
            features=feats,
            embeddings=embs,
            labels=np.asarray(ds.labels, np.int64),
            clean_labels=np.asarray(ds.clean_labels, np.int64),
            **extra,
        )
        sizes[name] = int(len(ds))
    write_json(
        out / "embed.json",
        {
            "sizes": sizes,
            "transform": which,
            "feature_dim": int(model.head.in_features),
            "embedding_dim": int(model.head.out_features),
            "train_class_names": list(data.train_class_names),
            "test_class_names": list(data.test_class_names),
        },
    )


def _publish(ctx: Context, out: Path) -> None:
    info = read_json(out / "embed.json")
    log.info(
        "embed: cached features %s (D=%d, E=%d) in %s",
        info["sizes"],
        info["feature_dim"],
        info["embedding_dim"],
        out,
    )
    ctx.logger.summary({f"embed/n_{k}": v for k, v in info["sizes"].items()})


STAGE = Stage(name="embed", deps=("train",), fields=_fields, compute=_compute, publish=_publish)
