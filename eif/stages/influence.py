"""Stage ``influence``: EIF and IF scores of every training sample for the mined confusions.

Reads the head (W, b) and the trained proxies from ``train``, the cached trunk features from
``embed`` and the confusions from ``mine``; never images. Artifacts, loadable with numpy + json
(docs/influence.md has a snippet):

- ``<kind>_<method>.npz`` for kind in pair / group / missim and method in eif / if:
  ``scores`` float32 (K, N_train), **positive = harmful**; ``harmful``/``helpful`` with
  ``*_offsets`` (K+1,) (ranked by |score|, see :func:`eif.influence.results.split_by_sign`);
  ``pairs`` (sum n_k, 2) test indices with ``pair_offsets`` (K+1,); ``d0`` (K,); EIF also
  ``d_theta``, ``delta_d``, ``theta_norm``, ``steps`` (K, N_theta); IF also ``iterations`` (K,).
- ``influence.json``: one entry per analysis (kind, method, file, K, wall seconds) and the settings.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from eif.influence.eif import EifConfig
from eif.influence.ihvp import IfConfig
from eif.settings import Settings
from eif.stages.base import Run, Stage
from eif.utils.errors import EifError, require
from eif.utils.io import load_torch, read_json, save_npz, write_json

log = logging.getLogger(__name__)

Kind = Literal["pair", "group", "missim"]
Method = Literal["eif", "if"]


class InfluenceConfig(Settings):
    """``influence``: which methods score which kinds of confusion, and their settings."""

    methods: tuple[Method, ...] = ("eif", "if")
    # pair, group, missim (mis-similar pairs: same class, far apart)
    kinds: tuple[Kind, ...] = ("pair", "group")
    eif: EifConfig = EifConfig()
    if_: IfConfig = Field(IfConfig(), alias="if")


def _settings(job: Any, env: Any) -> InfluenceConfig:
    return job.influence


def _confusions(mine: dict[str, np.ndarray], kind: str) -> tuple[list[np.ndarray], float]:
    """The pair arrays of every confusion of ``kind`` and its objective sign."""
    if kind == "pair":
        return [p[None] for p in mine["pairs"]], 1.0
    if kind == "missim":
        return [p[None] for p in mine["missim"]], -1.0
    off = mine["group_pair_offsets"]
    return [mine["group_pairs"][a:b] for a, b in zip(off[:-1], off[1:])], 1.0


def _load(run: Run) -> dict:
    from eif.influence.task import ConfusionTask
    from eif.losses import build_loss

    ck = load_torch(run.input("train") / "model.pt")
    w, b = ck["model"]["head.weight"].float(), ck["model"]["head.bias"].float()
    loss = build_loss(ck["loss_cfg"], int(ck["num_classes"]), int(w.shape[0]))
    loss.load_state_dict(ck["loss"])
    embed = run.input("embed")
    train, test = np.load(embed / "train.npz"), np.load(embed / "test.npz")
    dev = run.device
    t = {
        "w": w.to(dev),
        "b": b.to(dev),
        "task": ConfusionTask.from_loss(loss.float().to(dev).eval()),
        "ftr": torch.from_numpy(train["features"]).float().to(dev),
        "ytr": torch.from_numpy(train["labels"]).long().to(dev),
        "fte": torch.from_numpy(test["features"]).float().to(dev),
    }
    check = t["fte"][:256] @ t["w"].T + t["b"]
    ref = torch.from_numpy(test["embeddings"][:256]).float().to(dev)
    err = float((check - ref).norm() / ref.norm().clamp_min(1e-12))
    require(
        err < 1e-3,
        f"embed/test.npz embeddings are not features @ W^T + b of the trained head "
        f"(relative error {err:.2g}): the embed and train artifacts do not belong together",
    )
    return t


def _compute(c: InfluenceConfig, run: Run, out: Path) -> None:
    from eif.influence import build_batch, classic_influence, empirical_influence
    from eif.influence.results import split_by_sign

    t = _load(run)
    mine = dict(np.load(run.input("mine") / "mine.npz"))
    entries = []
    for kind in c.kinds:
        pairs, sign = _confusions(mine, str(kind))
        if not pairs:
            log.warning("influence: no %s confusions to analyse", kind)
            continue
        batch = build_batch(pairs, sign)
        batch = type(batch)(*(x.to(run.device) for x in vars(batch).values()))
        common = {"pairs": np.concatenate(pairs), "pair_offsets": np.cumsum([0] + [len(p) for p in pairs])}
        for method in c.methods:
            t0 = time.perf_counter()
            with torch.no_grad():
                args = (t["task"], t["ftr"], t["ytr"], t["w"], t["b"], t["fte"], batch)
                if method == "eif":
                    r = empirical_influence(*args, c.eif, progress=run.progress)
                    extra = {
                        "d_theta": r.d_theta,
                        "delta_d": r.delta_d,
                        "theta_norm": r.theta_norm,
                        "steps": r.steps,
                    }
                else:
                    r = classic_influence(*args, c.if_, progress=run.progress)
                    # The LiSSA scale actually used (resolves if.scale=auto).
                    extra = {"iterations": r.iterations, "scale": torch.tensor(float(r.scale))}
            wall = time.perf_counter() - t0
            scores = r.scores.float().cpu().numpy()
            require(bool(np.isfinite(scores).all()), f"influence {method} on {kind}: non-finite scores")
            fname = f"{kind}_{method}.npz"
            save_npz(
                out / fname,
                scores=scores,
                d0=r.d0.cpu().numpy(),
                **split_by_sign(scores),
                **common,
                **{k: v.cpu().numpy() for k, v in extra.items()},
            )
            entries.append(
                {
                    "kind": str(kind),
                    "method": str(method),
                    "file": fname,
                    "num_confusions": len(pairs),
                    "wall_seconds": wall,
                }
            )
            log.info("influence %s on %d %s confusions: %.1f s", method, len(pairs), kind, wall)
    if not entries:
        raise EifError("influence: nothing to analyse (no confusions of the requested kinds)")
    write_json(
        out / "influence.json",
        {
            "analyses": entries,
            "n_train": int(len(t["ytr"])),
            "settings": c.model_dump(mode="json", by_alias=True),
            "sign": "positive = harmful (the training sample makes the test error worse), negative = helpful",
        },
    )


def _publish(c: InfluenceConfig, run: Run, out: Path) -> None:
    info = read_json(out / "influence.json")
    rows = []
    for e in info["analyses"]:
        arr = np.load(out / e["file"])
        run.logger.summary({f"influence/{e['kind']}_{e['method']}_seconds": e["wall_seconds"]})
        n_harm, n_help = np.diff(arr["harmful_offsets"]), np.diff(arr["helpful_offsets"])
        for k in range(e["num_confusions"]):
            row = {
                "kind": e["kind"],
                "method": e["method"],
                "confusion": k,
                "d0": float(arr["d0"][k]),
                "n_harmful": int(n_harm[k]),
                "n_helpful": int(n_help[k]),
            }
            if e["method"] == "eif":
                row.update(delta_d=float(arr["delta_d"][k, 0]), steps=int(arr["steps"][k, 0]))
            rows.append(row)
        log.info(
            "influence %s/%s: %d confusions in %.1f s",
            e["kind"],
            e["method"],
            e["num_confusions"],
            e["wall_seconds"],
        )
    run.logger.table("influence/confusions", pd.DataFrame(rows))


STAGE = Stage(
    name="influence",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("train", "embed", "mine"),
    config=("influence", InfluenceConfig),
)
