"""Stage ``embed``: cache trunk features and head embeddings for train and test, with labels.

Artifacts (numpy ``.npz``, loadable without this project):

- ``train.npz``: ``features`` float32 (N, D), ``embeddings`` float32 (N, E), ``labels`` int64 (N,)
  (the labels training saw, noisy where noise was injected), ``clean_labels`` int64 (N,),
  ``flipped`` int64 (indices of mislabelled samples).
- ``test.npz``: the same for the pooled test set (InShop: query + gallery); ``query.npz`` and
  ``gallery.npz`` for InShop.
- ``embed.json``: sizes, the transform used, the class names, and each split's image paths
  relative to the data set root (``null`` for in-memory data).

All influence work (mine, EIF, IF, re-training) runs on these features and the head alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import PositiveInt

from eif.data.transforms import TransformsConfig
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.stages.common import load_trained
from eif.utils.io import read_json, save_npz, write_json

log = logging.getLogger(__name__)


class EmbedConfig(Settings):
    """``embed``: which transform the cached features use: ``eval`` (resize + centre crop) or
    ``influence`` (the reference's EIF/IF input: short side resized, no crop; sizes vary)."""

    transform: Literal["eval", "influence"] = "eval"
    batch_size: PositiveInt = setting(256, unkeyed=SPEED)


class EmbedSettings(Settings):
    """The cached features depend on ``transforms`` (all of them: the one ``which`` names is used, and
    keying the others too keeps the rule "every setting changes a key" simple) and the data."""

    data: dict[str, str]
    which: Literal["eval", "influence"]
    transforms: TransformsConfig
    batch_size: PositiveInt = setting(256, unkeyed=SPEED)


def _settings(job: Any, env: Any) -> EmbedSettings:
    return EmbedSettings(
        data=env.fingerprints("train", "test", "query", "gallery"),
        which=job.embed.transform,
        transforms=job.dataset.transforms,
        batch_size=job.embed.batch_size,
    )


def _compute(s: EmbedSettings, run: Run, out: Path) -> None:
    from eif.training.inference import predict

    model, _, _ = load_trained(run.input("train"), run.device)
    data = run.data()
    tf = s.transforms.build(s.which)
    # Uncropped images differ in size, so the reference embeds them one at a time.
    bs = 1 if getattr(s.transforms, s.which).name == "resize" else s.batch_size
    splits = {"train": data.train, "test": data.test}
    if data.query is not None:
        splits.update(query=data.query, gallery=data.gallery)
    sizes, paths = {}, {}
    for name, ds in splits.items():
        feats, embs = predict(
            model, ds.with_transform(tf), bs, run.device, desc=f"embed {name}", progress=run.progress
        )
        extra = {"flipped": np.asarray(data.noise.flipped, np.int64)} if name == "train" else {}
        save_npz(
            out / f"{name}.npz",
            features=feats,
            embeddings=embs,
            labels=np.asarray(ds.labels, np.int64),
            clean_labels=np.asarray(ds.clean_labels, np.int64),
            **extra,
        )
        sizes[name] = len(ds)
        paths[name] = ds.paths
    write_json(
        out / "embed.json",
        {
            "sizes": sizes,
            "transform": s.which,
            "feature_dim": int(model.head.in_features),
            "embedding_dim": int(model.head.out_features),
            "train_class_names": list(data.train_class_names),
            "test_class_names": list(data.test_class_names),
            "paths": paths,
        },
    )


def _publish(s: EmbedSettings, run: Run, out: Path) -> None:
    info = read_json(out / "embed.json")
    log.info(
        "embed: cached features %s (D=%d, E=%d) in %s",
        info["sizes"],
        info["feature_dim"],
        info["embedding_dim"],
        out,
    )
    run.logger.summary({f"embed/n_{k}": v for k, v in info["sizes"].items()})


STAGE = Stage(
    name="embed",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("train",),
    config=("embed", EmbedConfig),
)
