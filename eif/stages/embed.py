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
from pydantic import NonNegativeInt, PositiveInt

from eif.data.transforms import TransformsConfig
from eif.settings import SPEED, Settings, setting
from eif.stages.base import Run, Stage
from eif.training.inference import predict, stored_sizes, transformed_sizes
from eif.training.trained import load_trained
from eif.utils.io import read_json, save_npz, write_json

log = logging.getLogger(__name__)


class EmbedConfig(Settings):
    """``embed``: which transform the cached features use: ``eval`` (resize + centre crop) or
    ``influence`` (the reference's EIF/IF input: short side resized, no crop; sizes vary, and images
    of equal size are batched together), and how fast inference runs."""

    transform: Literal["eval", "influence"]
    batch_size: PositiveInt = setting(unkeyed=SPEED)
    # float16 autocast of the trunk on CUDA (ignored on CPU). Keyed as set: on CUDA it changes the
    # cached features (docs/gpu.md, "Batched inference"); on a CPU it gives the float32 numbers.
    amp: bool
    channels_last: bool = setting(unkeyed=SPEED)
    num_workers: NonNegativeInt = setting(unkeyed=SPEED)
    cpu_num_workers: NonNegativeInt = setting(unkeyed=SPEED)


class EmbedSettings(Settings):
    """The cached features depend on ``transforms`` (all of them: the one ``which`` names is used, and
    keying the others too keeps the rule "every setting changes a key" simple), ``amp`` and the data."""

    data: dict[str, str]
    which: Literal["eval", "influence"]
    transforms: TransformsConfig
    amp: bool
    batch_size: PositiveInt = setting(unkeyed=SPEED)
    channels_last: bool = setting(unkeyed=SPEED)
    num_workers: NonNegativeInt = setting(unkeyed=SPEED)
    cpu_num_workers: NonNegativeInt = setting(unkeyed=SPEED)


def _settings(job: Any, env: Any) -> EmbedSettings:
    e = job.embed
    return EmbedSettings(
        data=env.fingerprints("train", "test", "query", "gallery"),
        which=e.transform,
        transforms=job.dataset.transforms,
        amp=e.amp,
        batch_size=e.batch_size,
        channels_last=e.channels_last,
        num_workers=e.num_workers,
        cpu_num_workers=e.cpu_num_workers,
    )


def _compute(s: EmbedSettings, run: Run, out: Path) -> None:
    model, _, _ = load_trained(run.input("train"), run.device)
    data = run.data()
    tf = s.transforms.build(s.which)
    geometric = getattr(s.transforms, s.which)
    # Uncropped images differ in size (the reference embeds them one at a time): batch equal sizes.
    variable = geometric.name in ("resize", "none")
    workers = s.num_workers if run.device.type == "cuda" else s.cpu_num_workers
    splits = {"train": data.train, "test": data.test}
    if data.query is not None:
        splits.update(query=data.query, gallery=data.gallery)
    sizes, paths = {}, {}
    for name, ds in splits.items():
        keys = transformed_sizes(geometric, stored_sizes(ds)) if variable else None
        feats, embs = predict(
            model,
            ds.with_transform(tf),
            s.batch_size,
            run.device,
            desc=f"embed {name}",
            amp=s.amp,
            progress=run.progress,
            sizes=keys,
            num_workers=workers,
            channels_last=s.channels_last,
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
    network=lambda job: job.embed.transform,
)
