"""eif from Python: arrays in, confusions, influence scores, the re-training check, relabel suggestions and
the report out (docs/api.md).

:func:`run` writes the arrays as a ``dataset=features`` file (named by its content), composes the same
Hydra config the command line composes (the YAML options it selects: ``dataset=features``, the loss,
the methods, plus your ``overrides``), puts its Python arguments into it as values, validates the whole
job once into a :class:`~eif.config.JobConfig` and runs the same pipeline (:func:`eif.pipeline.run_job`),
so results land in the same content-keyed store, with the same sign convention (positive score =
harmful: up-weighting the training sample makes the confusion worse), and are reused across calls
and with ``eif dataset=features dataset.path=...`` on that file. :class:`Result` reads the artifacts back
as pandas tables.

A given head (``head=(W, b)``, and the loss's proxies) is saved as an eif ``model.pt`` and loaded
instead of training (``model.checkpoint``); it must map the features exactly as your model does:
``emb = W @ LayerNorm(x) + b`` by default, ``W @ x + b`` with ``layer_norm=False``.

Errors are :class:`~eif.utils.errors.EifError` with the same one-line message the command line prints.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from eif.config import JobConfig, load_job
from eif.influence.artifacts import Influence
from eif.losses.base import LossConfig
from eif.pipeline import run_job
from eif.settings import config_dir
from eif.utils.errors import EifError
from eif.utils.io import read_json, save_npz, save_torch

STAGES = ("train", "evaluate", "mine", "influence")
ArrayLike = Any  # numpy array, torch tensor or sequence


def _array(x: ArrayLike, name: str, dtype: Any = None) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    try:
        out = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:  # e.g. strings as features
        what = "numbers" if dtype is not None else "numbers or strings"
        raise EifError(f"{name}: expected {what}, got values numpy cannot convert ({err})") from None
    if out.dtype == object:
        raise EifError(f"{name}: expected numbers or strings, got Python objects")
    return out


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def write_features(
    directory: Path,
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike,
    class_names: Sequence[str] | None = None,
    train_paths: Sequence[str] | None = None,
    test_paths: Sequence[str] | None = None,
) -> Path:
    """The arrays as a ``dataset=features`` ``.npz`` in ``directory``, named by their content (the same
    arrays give the same file). Shapes: features (N, D) float, labels (N,) int or str, paths (N,) str."""
    arrays = {
        "train_features": _array(train_features, "train_features", np.float32),
        "train_labels": _array(train_labels, "train_labels"),
        "test_features": _array(test_features, "test_features", np.float32),
        "test_labels": _array(test_labels, "test_labels"),
    }
    for key, value in (
        ("class_names", class_names),
        ("train_paths", train_paths),
        ("test_paths", test_paths),
    ):
        if value is not None:
            arrays[key] = np.array([str(v) for v in value])
    path = Path(directory) / f"features-{_digest(arrays)}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(path, **arrays)
    return path


def write_head(
    directory: Path,
    weight: ArrayLike,
    bias: ArrayLike | None,
    loss_state: dict[str, np.ndarray],
    num_classes: int,
) -> Path:
    """A given head ``weight`` (E, D), ``bias`` (E,) (None: zeros) and loss state as an eif ``model.pt``
    in ``directory``, named by its content."""
    w = torch.as_tensor(_array(weight, "head weight", np.float32))
    if w.ndim != 2:
        raise EifError(f"head: the weight must be (E, D), got shape {tuple(w.shape)}")
    b = torch.zeros(w.shape[0]) if bias is None else torch.as_tensor(_array(bias, "head bias", np.float32))
    if tuple(b.shape) != (w.shape[0],):
        raise EifError(f"head: the bias must be (E={w.shape[0]},), got shape {tuple(b.shape)}")
    state = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in loss_state.items()}
    arrays = {"w": w.numpy(), "b": b.numpy(), **{f"loss.{k}": v.numpy() for k, v in state.items()}}
    path = Path(directory) / f"head-{_digest(arrays)}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        model = {"head.weight": w, "head.bias": b}
        save_torch(path, {"model": model, "loss": state, "num_classes": int(num_classes)})
    return path


def _loss_state(loss: LossConfig, num_classes: int, embedding_size: int, proxies: ArrayLike | None) -> dict:
    """The state dict of ``loss`` built for (C, E), with its one learnable tensor set to ``proxies``."""
    built = loss.build(num_classes, embedding_size)
    state = {k: v.detach().cpu().numpy() for k, v in built.state_dict().items()}
    if not state:
        return state
    if proxies is None:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in state.items())
        raise EifError(f"head: loss={loss.name} has learned parameters ({shapes}); pass them as proxies=")
    if len(state) != 1:
        raise EifError(
            f"head: loss={loss.name} has {len(state)} state tensors; give a model.pt via overrides"
        )
    ((key, value),) = state.items()
    p = _array(proxies, "proxies", np.float32)
    if p.shape != value.shape:
        raise EifError(f"head: loss={loss.name} expects proxies of shape {value.shape}, got {p.shape}")
    return {key: p}


def _names(value: Sequence[str], what: str) -> list[str]:
    """``value`` as a list of names; a single string is a mistake (it is not split into letters)."""
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise EifError(f"{what} must be a list or tuple of names (strings), got {value!r}")
    return list(value)


def _integer(value: Any, what: str) -> int:
    """``value`` as a Python int (numpy and torch integers too); anything else is one error line."""
    try:
        return operator.index(value)
    except TypeError:
        raise EifError(f"{what} must be an integer, got {value!r}") from None


def compose_job(choices: Sequence[str], values: dict[str, Any], overrides: Sequence[str]) -> JobConfig:
    """The job of the Hydra config composed with the group ``choices`` (e.g. ``dataset=features``) and
    ``overrides``, with ``values`` (``{dotted key: Python value}``) set before interpolations resolve;
    an override of the same key wins over ``values``. Validated once, without the stage checks
    (:func:`eif.pipeline.run_job` runs them)."""
    overridden = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
            cfg = compose("config", overrides=[*choices, *overrides])
        with open_dict(cfg):
            for key, value in values.items():
                if key not in overridden:
                    OmegaConf.update(cfg, key, value, merge=False)
    except (HydraException, OmegaConfBaseException) as err:
        raise EifError(f"config: {' '.join(str(err).split())}") from None
    return load_job(cfg, check_stages=False)


def run(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike,
    *,
    class_names: Sequence[str] | None = None,
    train_paths: Sequence[str] | None = None,
    test_paths: Sequence[str] | None = None,
    head: tuple[ArrayLike, ArrayLike | None] | None = None,
    proxies: ArrayLike | None = None,
    loss: str = "proxynca_pp",
    layer_norm: bool = True,
    embedding_size: int = 64,
    methods: Sequence[str] = ("eif", "if"),
    stages: Sequence[str] = STAGES,
    seed: int = 0,
    workdir: str | os.PathLike = "eif-api",
    overrides: Sequence[str] = (),
) -> Result:
    """Run eif's stages on feature vectors and return the run's :class:`Result`.

    ``train_*``/``test_*``: features (N, D), labels (N,) (ints naming ``class_names`` rows, or strings),
    optional paths (N,) shown in tables; test classes may differ from training classes (the usual DML
    split). ``head``: (W (E, D), b (E,) or None) to analyse your head instead of training one, with
    ``proxies`` the loss's learned tensor (e.g. (C, E) for ``proxynca_pp``). ``stages``: any of the CLI's
    (``retrain``, ``stats``, ``relabel``, ``report``, ...); inputs they need are computed first.
    ``workdir``: holds the input files, ``store/`` (results, reused) and ``runs/<time>/``.
    ``overrides``: further Hydra overrides, as on the command line (e.g. ``train.epochs=20``).
    """
    work = Path(workdir).resolve()
    data = write_features(
        work / "inputs",
        train_features,
        train_labels,
        test_features,
        test_labels,
        class_names,
        train_paths,
        test_paths,
    )
    choices = ["dataset=features", f"loss={loss}", f"methods=[{','.join(_names(methods, 'methods'))}]"]
    weight = None
    if head is not None:
        weight = _array(head[0], "head weight", np.float32)
        if weight.ndim != 2:
            raise EifError(f"head: the weight must be (E, D), got shape {weight.shape}")
        embedding_size = weight.shape[0]
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    values = {
        "dataset.path": str(data),
        "model.layer_norm": layer_norm,
        "model.embedding_size": _integer(embedding_size, "embedding_size"),
        "stages": _names(stages, "stages"),
        "seed": _integer(seed, "seed"),
        "paths.output_dir": str(work / "runs" / stamp),
        "paths.store_dir": str(work / "store"),
        "paths.cache_dir": str(work / "cache"),
    }
    job = compose_job([*choices, "logger=none"], values, overrides)
    if head is not None and weight is not None:
        labels = _array(train_labels, "train_labels")
        num_classes = len(np.unique(labels))
        state = _loss_state(job.loss, num_classes, weight.shape[0], proxies)
        ckpt = write_head(work / "inputs", weight, head[1], state, num_classes)
        job = job.model_copy(update={"model": job.model.model_copy(update={"checkpoint": str(ckpt)})})
    run_dir = Path(job.paths.output_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return Result(run_dir, run_job(job))


@dataclass
class Result:
    """One run's outputs: ``run_dir`` and its ``record`` (``run.json``: artifacts, keys, timings)."""

    run_dir: Path
    record: dict[str, Any]

    def artifact(self, stage: str) -> Path:
        """The store directory of ``stage``'s output (fails in one line when the run did not make it)."""
        path = self.record["artifacts"].get(stage)
        skipped = self.record.get("skipped", {})
        if path is None and stage in skipped:  # e.g. influence of a model without confusions
            raise EifError(f"this run has no {stage} output: {skipped[stage]}")
        if path is None:
            raise EifError(f"this run has no {stage} output; add {stage!r} to stages")
        return Path(path)

    @cached_property
    def _embed(self) -> dict[str, Any]:
        return read_json(self.artifact("embed") / "embed.json")

    @cached_property
    def influence(self) -> Influence:
        """The influence artifact (every method's scores; :mod:`eif.influence.artifacts`)."""
        return Influence(self.artifact("influence"))

    @property
    def metrics(self) -> dict[str, float]:
        """Test retrieval metrics (Recall@K, MAP@R, NMI, ...)."""
        return read_json(self.artifact("evaluate") / "metrics.json")

    def _test_class(self, labels: np.ndarray) -> list[str]:
        info = self._embed
        names = list(info["train_class_names"]) + list(info["test_class_names"])
        return [names[i] if 0 <= i < len(names) else str(i) for i in labels]

    def confusions(self) -> pd.DataFrame:
        """The mined confusion pairs: ``confusion`` (row k of the scores), test indices ``test``
        and ``neighbour`` (its nearest neighbour, of another class), their classes, and distance ``d``."""
        with np.load(self.artifact("mine") / "mine.npz") as z:
            pairs, d, labels = z["pairs"], z["pair_d"], z["labels"]
        return pd.DataFrame(
            {
                "confusion": np.arange(len(pairs)),
                "test": pairs[:, 0],
                "neighbour": pairs[:, 1],
                "test_class": self._test_class(labels[pairs[:, 0]]),
                "neighbour_class": self._test_class(labels[pairs[:, 1]]),
                "d": d,
            }
        )

    def scores(self, method: str = "eif", kind: str = "pair") -> np.ndarray:
        """Scores (K confusions, N training samples) of ``method``; positive = harmful."""
        return self.influence.get(kind, method).scores

    def top(
        self,
        confusion: int = 0,
        method: str = "eif",
        k: int = 5,
        side: str = "harmful",
        kind: str = "pair",
    ) -> pd.DataFrame:
        """The ``k`` most ``harmful`` (score > 0) or ``helpful`` (score < 0) training samples of one
        confusion by |score|: ``rank``, ``train`` index, ``label``, ``class``, ``score``, ``path``."""
        if side not in ("harmful", "helpful"):
            raise EifError(f"side={side!r}: use 'harmful' or 'helpful'")
        analysis = self.influence.get(kind, method)
        if not 0 <= confusion < len(analysis.scores):
            raise EifError(f"confusion={confusion}: this run has {len(analysis.scores)} {kind} confusions")
        ids = analysis.ranked(confusion, side, k)
        with np.load(self.artifact("embed") / "train.npz") as z:
            labels = z["labels"][ids]
        names = self._embed["train_class_names"]
        paths = self._embed["paths"].get("train")
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(ids) + 1),
                "train": ids,
                "label": labels,
                "class": [names[i] for i in labels],
                "score": analysis.scores[confusion, ids],
                "path": [paths[i] for i in ids] if paths else [f"index:{i}" for i in ids],
            }
        )

    def table1(self) -> pd.DataFrame:
        """Table 1 rows (the re-training check: EIF vs the baseline, paired tests) from ``stats``."""
        return pd.DataFrame(read_json(self.artifact("stats") / "stats.json")["rows"])

    def relabel(self) -> pd.DataFrame:
        """The relabel suggestions for review (``review.csv`` of ``relabel``)."""
        return pd.read_csv(self.artifact("relabel") / "review.csv")

    @property
    def report(self) -> Path:
        """The self-contained ``report.html`` of this run (needs the ``report`` stage)."""
        path = self.run_dir / "report.html"
        if not path.is_file():
            raise EifError("this run has no report.html; add 'report' to stages")
        return path
