"""Stage ``mine``: the test-set errors to explain, from the cached test embeddings (docs/protocol.md, Mining).

Artifacts: ``mine.npz`` (numpy only) and ``mine.json`` (counts and settings). Arrays in ``mine.npz``:

- ``nn_index``, ``nn_label``, ``nn_dist`` (N_test,): every test sample's 1-NN (raw Euclidean, self
  excluded), its label and distance; ``labels`` (N_test,).
- ``pairs`` (K, 2) test indices (i, 1-NN(i)) with different labels, each unordered pair once unless
  ``mine.unique_pairs=false``; ``pair_d`` (K,) their d.
- groups (M of them): ``group_class``, ``group_n_wrong``, ``group_d`` (mean d over the group's pairs),
  ``group_pair_offsets`` (M+1,) into ``group_pairs`` (sum n_m, 2); ``group_confused_offsets`` (M+1,)
  into ``group_confused`` / ``group_confused_share`` (the confused classes and cumulative shares).
- ``missim`` (K', 2) same-class pairs, farthest first; ``missim_d`` (K',).

d = ||z_a/|z_a| - z_b/|z_b| ||^2 = 2 - 2 cos of the head outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import NonNegativeInt, PositiveInt

from eif.influence.mining import (
    confusion_groups,
    confusion_pairs,
    missimilar_pairs,
    nearest_neighbours,
    pair_distance,
)
from eif.settings import Settings, setting
from eif.stages.base import Run, Stage
from eif.utils.io import read_json, save_npz, write_json

log = logging.getLogger(__name__)


class MineConfig(Settings):
    """``mine``: which test-set errors to explain (docs/influence.md, "Mining")."""

    num_pairs: NonNegativeInt = 100
    # index: the first num_pairs wrong test samples in index order (the reference); distance: closest first
    order: Literal["index", "distance"] = "index"
    # true: mutual nearest neighbours count as one pair; false: as (i, j) and (j, i) (the reference)
    unique_pairs: bool = True
    num_groups: NonNegativeInt = 30
    share: float = setting(0.5, gt=0, le=1)
    max_confused: PositiveInt = 10
    num_missim: NonNegativeInt = 100


def _settings(job: Any, env: Any) -> MineConfig:
    return job.mine


def _offsets(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)


def _compute(m: MineConfig, run: Run, out: Path) -> None:
    test = np.load(run.input("embed") / "test.npz")
    z, labels = test["embeddings"], test["labels"]
    nn = nearest_neighbours(z, labels)
    pairs = confusion_pairs(nn, labels, m.num_pairs, m.order, m.unique_pairs)
    groups = confusion_groups(nn, labels, m.num_groups, m.share, m.max_confused)
    missim = missimilar_pairs(z, labels, m.num_missim)
    gpairs = [g.pairs for g in groups]
    save_npz(
        out / "mine.npz",
        nn_index=nn.index,
        nn_label=nn.label,
        nn_dist=nn.dist,
        labels=labels,
        pairs=pairs.reshape(-1, 2),
        pair_d=pair_distance(z, pairs),
        group_class=np.array([g.cls for g in groups], np.int64),
        group_n_wrong=np.array([g.n_wrong for g in groups], np.int64),
        group_d=np.array([pair_distance(z, p).mean() for p in gpairs], np.float64),
        group_pair_offsets=_offsets(gpairs),
        group_pairs=np.concatenate(gpairs).reshape(-1, 2) if groups else np.zeros((0, 2), np.int64),
        group_confused_offsets=_offsets([g.confused for g in groups]),
        group_confused=np.concatenate([g.confused for g in groups] or [np.zeros(0, np.int64)]),
        group_confused_share=np.concatenate([g.shares for g in groups] or [np.zeros(0)]),
        missim=missim.reshape(-1, 2),
        missim_d=pair_distance(z, missim),
    )
    n_wrong = int(nn.wrong(labels).sum())
    write_json(
        out / "mine.json",
        {
            "n_test": int(len(labels)),
            "n_wrong": n_wrong,
            "recall_at_1": 1 - n_wrong / len(labels),
            "n_pairs": int(len(pairs)),
            "n_groups": len(groups),
            "n_missim": int(len(missim)),
            "settings": m.model_dump(mode="json"),
        },
    )


def _publish(m: MineConfig, run: Run, out: Path) -> None:
    info = read_json(out / "mine.json")
    if info["n_wrong"] == 0:  # a result, not an error: the influence stage then has nothing to attribute
        log.info("note: mine: every test 1-NN has the right label (recall@1 = 1): no confusions to explain")
    arr = np.load(out / "mine.npz")
    log.info(
        "mine: %d of %d test samples have a wrong 1-NN; %d pairs, %d groups, %d mis-similar pairs",
        info["n_wrong"],
        info["n_test"],
        info["n_pairs"],
        info["n_groups"],
        info["n_missim"],
    )
    run.logger.summary({f"mine/{k}": info[k] for k in ("n_wrong", "n_pairs", "n_groups", "n_missim")})
    off, coff = arr["group_pair_offsets"], arr["group_confused_offsets"]
    run.logger.table(
        "mine/groups",
        pd.DataFrame(
            {
                "class": arr["group_class"],
                "n_wrong": arr["group_n_wrong"],
                "n_pairs": np.diff(off),
                "d": arr["group_d"],
                "confused": [
                    " ".join(map(str, arr["group_confused"][a:b])) for a, b in zip(coff[:-1], coff[1:])
                ],
            }
        ),
    )


STAGE = Stage(
    name="mine",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("embed",),
    config=("mine", MineConfig),
    version=2,  # 2: mutual nearest neighbours mined once (mine.unique_pairs)
)
