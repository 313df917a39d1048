# pyright: strict
"""The one schema of influence results, written by the ``influence`` stage and read by every consumer
(re-training, detection, relabelling, the report, the attribution benchmark).

An influence artifact directory holds, per analysis (kind of confusion x method):

- ``<kind>_<method>.npz``: ``scores`` float32 (K, N_train), **positive = harmful**; ``d0`` (K,);
  ``pairs`` (sum P_k, 2) test indices with ``pair_offsets`` (K+1,); ``harmful`` / ``helpful`` with
  ``harmful_offsets`` / ``helpful_offsets`` (K+1,): confusion k's training indices with score > 0 /
  < 0, by |score| descending; plus the method's own per-confusion arrays (EIF: ``d_theta``,
  ``delta_d``, ``theta_norm``, ``steps``; IF: ``iterations``, ``residual``).
- ``influence.json``: ``analyses`` (one entry per file: kind, method, file, num_confusions,
  wall_seconds, info: the method's diagnostics of that run), ``methods`` (each method's settings),
  ``n_train``, ``sign``, and ``diagnostics`` of the trained head (:mod:`eif.influence.diagnostics`:
  ``stationarity_ratio``, ``mean_gradient_norm``, ``mean_sample_gradient_norm``, ``stationarity_warn``,
  and ``methods``: per method, its facts on this head whatever the confusions, e.g. an IF method's
  ``eigenvalues_above_damping``; absent in artifacts written before them).

Only this module names those files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from eif.influence.results import split_by_sign
from eif.utils.errors import EifError, require
from eif.utils.io import read_json, save_npz, write_json

INDEX = "influence.json"
KINDS = ("pair", "group", "missim")
SIGN = "positive = harmful (the training sample makes the test error worse), negative = helpful"


def file_name(kind: str, method: str) -> str:
    return f"{kind}_{method}.npz"


def offsets(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)


def write_analysis(
    out: Path,
    kind: str,
    method: str,
    scores: np.ndarray,
    d0: np.ndarray,
    pairs: list[np.ndarray],
    arrays: dict[str, np.ndarray],
    info: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """Write one analysis file; returns its ``influence.json`` entry."""
    require(bool(np.isfinite(scores).all()), f"influence {method} on {kind}: non-finite scores")
    save_npz(
        out / file_name(kind, method),
        scores=scores.astype(np.float32),
        d0=d0,
        pairs=np.reshape(np.concatenate(pairs), (-1, 2)),
        pair_offsets=offsets(pairs),
        **split_by_sign(scores),
        **arrays,
    )
    return {
        "kind": kind,
        "method": method,
        "file": file_name(kind, method),
        "num_confusions": len(pairs),
        "wall_seconds": seconds,
        "info": info,
    }


def write_index(
    out: Path,
    entries: list[dict[str, Any]],
    n_train: int,
    methods: dict[str, Any],
    diagnostics: dict[str, Any] | None = None,
) -> None:
    if not entries:
        raise EifError("influence: nothing to analyse (no confusions of the requested kinds)")
    index = {"analyses": entries, "n_train": n_train, "methods": methods, "sign": SIGN}
    write_json(out / INDEX, index | ({} if diagnostics is None else {"diagnostics": diagnostics}))


@dataclass
class Analysis:
    """One (kind, method) analysis, loaded: ``scores`` (K, N), ``d0`` (K,), ``pairs`` (K arrays (P_k, 2)),
    ``arrays`` (the rest of the file), ``info`` and ``seconds`` from the index."""

    kind: str
    method: str
    scores: np.ndarray
    d0: np.ndarray
    pairs: list[np.ndarray]
    arrays: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict[str, Any])
    seconds: float = float("nan")

    def ranked(self, k: int, side: str, top: int | None = None) -> np.ndarray:
        """Confusion k's ``harmful`` or ``helpful`` training indices by |score| descending (first ``top``)."""
        off = self.arrays[f"{side}_offsets"]
        return self.arrays[side][off[k] : off[k + 1]][:top]


class Influence:
    """An influence artifact directory, read lazily."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        path = self.directory / INDEX
        require(path.is_file(), f"{path} is missing: run the influence stage first")
        self.index: dict[str, Any] = read_json(path)
        self._loaded: dict[tuple[str, str], Analysis] = {}

    @cached_property
    def entries(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(e["kind"], e["method"]): e for e in self.index["analyses"]}

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for _, m in self.entries))

    @property
    def diagnostics(self) -> dict[str, Any]:
        """The trained head's diagnostics (stationarity; module doc), empty when not recorded."""
        return dict(self.index.get("diagnostics", {}))

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self.entries))

    def has(self, kind: str, method: str) -> bool:
        return (kind, method) in self.entries

    def get(self, kind: str, method: str) -> Analysis:
        if (kind, method) not in self._loaded:
            entry = self.entries.get((kind, method))
            if entry is None:
                raise EifError(
                    f"{self.directory} holds no {kind} analysis by {method!r} (it has {sorted(self.entries)})"
                )
            with np.load(self.directory / entry["file"]) as z:
                arrays = {k: z[k] for k in z.files}
            off, flat = arrays.pop("pair_offsets"), arrays.pop("pairs").astype(np.int64)
            pairs = [flat[a:b] for a, b in zip(off[:-1], off[1:])]
            self._loaded[(kind, method)] = Analysis(
                kind,
                method,
                arrays.pop("scores"),
                arrays.pop("d0"),
                pairs,
                arrays,
                entry.get("info", {}),
                float(entry.get("wall_seconds", float("nan"))),
            )
        return self._loaded[(kind, method)]

    def group_scores(self, group: int) -> dict[str, np.ndarray]:
        """Every method's scores (N,) float64 of confusion group ``group`` (a row of its group analysis)."""
        out: dict[str, np.ndarray] = {}
        for (kind, method), entry in self.entries.items():
            if kind != "group":
                continue
            if not 0 <= group < entry["num_confusions"]:
                raise EifError(
                    f"detect.group={group}, but the influence stage scored {entry['num_confusions']} groups"
                )
            out[method] = self.get("group", method).scores[group].astype(np.float64)
        require(bool(out), f"{self.directory} holds no group scores: influence.kinds needs group")
        return out

    def seconds(self, kind: str) -> dict[str, float]:
        """Wall seconds of scoring all confusions of ``kind``, per method."""
        return {m: float(e["wall_seconds"]) for (k, m), e in self.entries.items() if k == kind}
