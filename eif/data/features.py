"""``dataset=features``: precomputed feature vectors (any backbone) instead of images.

One file holds every split (docs/data.md, "Precomputed features"):

- ``.npz``: ``train_features`` float (N, D) and ``train_labels`` (N,), the same for ``test`` (or for
  ``query`` and ``gallery``, which then form the test set), optional ``<split>_paths`` (N,) strings
  (the image or item each row came from) and ``class_names`` (K,) strings naming integer labels
  ``0..K-1``. Labels are integers or strings (strings are the class names).
- ``.parquet``: one row per sample with columns ``split`` (train/test/query/gallery), ``label``,
  ``features`` (a list of D floats), optional ``path`` and ``class_name``.

Train labels become ``0..C-1`` by sorted label value, test labels ``C + rank`` (as ``dataframe``).
A vector travels through eif as a D-channel 1x1 image: :class:`FeatureSet` items are (D, 1, 1)
tensors, so the trainer, the sampler and the feature cache work unchanged, and ``model=features_head``
trains only its head. ``python -m eif.data.features export <embed dir> <out.npz>`` writes the
features an eif model computed (an ``embed`` artifact) in this layout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import PositiveFloat, model_validator

from eif.data.base import ImageSet, Transform
from eif.data.config import DatasetConfig
from eif.data.splits import Splits
from eif.data.transforms import Geometric, NoGeometric, TransformsConfig
from eif.settings import LOCATION, setting
from eif.utils.errors import EifError
from eif.utils.io import read_json, save_npz, write_with

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "query", "gallery")
FIELDS = ("features", "labels", "paths")


class FeatureSet(ImageSet):
    """Feature vectors ``features`` float32 (N, D); item ``i`` is ``(vector (D, 1, 1), label, i)``.

    ``paths``: what each row came from (e.g. image paths relative to ``root``), or None."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        paths: list[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(labels, transform)
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        if self.features.ndim != 2 or self.features.shape[0] != len(self):
            raise ValueError(f"features must be (N={len(self)}, D), got {self.features.shape}")
        if paths is not None and len(paths) != len(self):
            raise ValueError(f"{len(paths)} paths for {len(self)} labels")
        self.paths = paths

    def load(self, i: int) -> np.ndarray:  # type: ignore[override]
        """Row ``i`` as a float32 (1, 1, D) array; the (identity) transform's ToTensor makes it the
        (D, 1, 1) item, unscaled (only uint8 arrays are divided by 255)."""
        return self.features[i].reshape(1, 1, -1)


class FeatureTransforms(TransformsConfig):
    """Feature vectors are used as they are: mean 0, std 1, no RGB conversion, no geometric step (the
    composed transform is the identity on the float vectors)."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[PositiveFloat, ...] = (1.0,)
    to_rgb: bool = False
    train: Geometric = NoGeometric(name="none")
    eval: Geometric = NoGeometric(name="none")
    influence: Geometric = NoGeometric(name="none")

    @model_validator(mode="after")
    def _identity(self) -> FeatureTransforms:
        steps = (self.train.name, self.eval.name, self.influence.name)
        if self.mean != (0.0,) or self.std != (1.0,) or self.to_rgb or steps != ("none",) * 3:
            raise ValueError("feature vectors take no image transforms (mean [0], std [1], steps none)")
        return self

    @property
    def channels(self) -> None:
        """Not images: the model takes the vectors as they are (their size D is its ``in_channels``)."""
        return None


class Features(DatasetConfig):
    """``dataset=features``: the vectors in ``path`` (an ``.npz`` or ``.parquet`` file, layout above).

    ``root``: the directory that ``paths`` are relative to (only used to show images); not keyed, the
    file's arrays are fingerprinted instead (:mod:`eif.data.fingerprint`)."""

    path: str = setting(unkeyed=LOCATION)
    root: str | None = setting(None, unkeyed=LOCATION)
    transforms: FeatureTransforms = FeatureTransforms()

    def load(self) -> Splits:
        arrays, names = read_features(Path(self.path))
        return make_splits(arrays, names, self.path)


def read_features(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[Any, str] | None]:
    """The arrays of every split in ``path`` (``{split: {features, labels[, paths]}}``) and the class
    names by label value (None: the labels name themselves)."""
    if not path.is_file():
        raise EifError(f"features: {path} is not a file; set dataset.path to an .npz or .parquet file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise EifError(f"features: {path}: unknown file type {path.suffix!r}; use .npz or .parquet")


def _read_npz(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[Any, str] | None]:
    known = {f"{s}_{f}" for s in SPLITS for f in FIELDS} | {"class_names"}
    try:
        with np.load(path, allow_pickle=False) as z:
            unknown = sorted(set(z.files) - known)
            if unknown:
                raise EifError(
                    f"features: {path}: unknown arrays {unknown[:3]}; expected <split>_features, "
                    f"<split>_labels, <split>_paths (split: {', '.join(SPLITS)}) and class_names"
                )
            raw = {k: z[k] for k in z.files}
    except ValueError as err:  # object arrays need pickle, which a data file must not need
        raise EifError(
            f"features: {path}: cannot read without pickle ({err}); save strings as np.array(list_of_str)"
        ) from None
    except (OSError, EOFError) as err:
        raise EifError(f"features: {path} is not a readable .npz file ({err})") from None
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for key, value in raw.items():
        if key != "class_names":
            split, field = key.split("_", 1)
            arrays.setdefault(split, {})[field] = value
    names = raw.get("class_names")
    if names is None:
        return arrays, None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise EifError(f"features: {path}: class_names must be a 1-d array of strings, got {names.dtype}")
    return arrays, {i: str(n) for i, n in enumerate(names.tolist())}


def _read_parquet(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[Any, str] | None]:
    import pandas as pd

    try:
        table = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
        raise EifError(f"features: {path} is not a readable parquet file ({err})") from None
    missing = [c for c in ("split", "label", "features") if c not in table.columns]
    if missing:
        raise EifError(
            f"features: {path}: missing columns {missing}; expected split, label, features "
            "(a list of floats per row), optional path and class_name"
        )
    bad = sorted(set(table["split"].astype(str)) - set(SPLITS))
    if bad:
        raise EifError(f"features: {path}: split must be one of {', '.join(SPLITS)} (got {bad[0]!r})")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for split, part in table.groupby("split", sort=False):
        try:
            vectors = np.stack([np.asarray(v, dtype=np.float32) for v in part["features"]])
        except ValueError as err:
            raise EifError(f"features: {path}: the {split} feature lists differ in length ({err})") from None
        arrays[str(split)] = {"features": vectors, "labels": part["label"].to_numpy()}
        if "path" in table.columns:
            arrays[str(split)]["paths"] = part["path"].astype(str).to_numpy()
    if "class_name" not in table.columns:
        return arrays, None
    pairs = table[["label", "class_name"]].drop_duplicates()
    pair_labels = pd.Series(pairs["label"])
    clash = pair_labels.to_numpy()[pair_labels.duplicated().to_numpy()]
    if len(clash):
        raise EifError(f"features: {path}: label {clash[0]!r} has more than one class_name")
    return arrays, {k.item() if hasattr(k, "item") else k: str(v) for k, v in pairs.itertuples(index=False)}


def _check_split(path: str, split: str, part: dict[str, np.ndarray], dim: int | None) -> None:
    """One line for the first problem with a split's arrays."""
    where = f"features: {path}: {split}"
    if "features" not in part or "labels" not in part:
        raise EifError(f"{where} needs both {split}_features and {split}_labels")
    x, y = part["features"], part["labels"]
    if x.ndim != 2 or x.dtype.kind not in "fiu" or x.shape[0] == 0:
        raise EifError(
            f"{where}_features must be a non-empty (N, D) array of numbers, got {x.dtype} {x.shape}"
        )
    if dim is not None and x.shape[1] != dim:
        raise EifError(f"{where}_features has D={x.shape[1]}, the train features D={dim}")
    # Checked as the float32 that training sees: float64 beyond float32's range (3.4e38) becomes inf.
    with np.errstate(over="ignore"):
        bad = int(np.count_nonzero(~np.isfinite(x.astype(np.float32))))
    if bad:
        raise EifError(f"{where}_features holds {bad} values that are NaN or infinite as float32")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iuUSO":
        raise EifError(
            f"{where}_labels must be {x.shape[0]} integers or strings (one per row), got {y.dtype} {y.shape}"
        )
    if "paths" in part and part["paths"].shape != (x.shape[0],):
        raise EifError(f"{where}_paths must hold {x.shape[0]} strings, got shape {part['paths'].shape}")


def make_splits(arrays: dict[str, dict[str, np.ndarray]], names: dict[Any, str] | None, path: str) -> Splits:
    """The train / test (/ query, gallery) :class:`FeatureSet` of checked ``arrays``."""
    where = f"features: {path}"
    if "train" not in arrays:
        raise EifError(f"{where}: no train split (train_features, train_labels)")
    pooled = "query" in arrays or "gallery" in arrays
    if pooled == ("test" in arrays) or (pooled and not {"query", "gallery"} <= set(arrays)):
        raise EifError(f"{where}: give a test split, or query and gallery splits (not both)")
    dim = None
    for split in ("train", "test", "query", "gallery"):
        if split in arrays:
            _check_split(path, split, arrays[split], dim)
            dim = arrays[split]["features"].shape[1]
    parts = ["query", "gallery"] if pooled else ["test"]
    kinds = {arrays[s]["labels"].dtype.kind in "iu" for s in ["train", *parts]}
    if len(kinds) > 1:
        raise EifError(f"{where}: labels must be integers in every split or strings in every split")
    integer = kinds.pop()
    if names is not None and not integer:
        raise EifError(
            f"{where}: class names (class_names, class_name) name integer labels; string labels name "
            "themselves"
        )
    labels = {s: arrays[s]["labels"] if integer else arrays[s]["labels"].astype(str) for s in arrays}

    def class_names(values: np.ndarray) -> list[str]:
        if names is None:
            return [str(v) for v in values.tolist()]
        unnamed = [v for v in values.tolist() if v not in names]
        if unnamed:
            raise EifError(f"{where}: label {unnamed[0]} has no class name ({len(names)} class_names)")
        return [names[v] for v in values.tolist()]

    train_values, train_ids = np.unique(labels["train"], return_inverse=True)
    test_values = np.unique(np.concatenate([labels[s] for s in parts]))
    shared = np.intersect1d(train_values, test_values)
    if shared.size:
        log.warning(
            "features: %d of the %d test labels also occur in train (e.g. %s): the test classes are not new "
            "classes; eif gives them test labels of their own",
            shared.size,
            test_values.size,
            shared[0],
        )
    c = train_values.size

    def feature_set(split: str) -> FeatureSet:
        ids = (train_ids if split == "train" else c + np.searchsorted(test_values, labels[split])).astype(
            np.int64
        )
        paths = arrays[split].get("paths")
        return FeatureSet(
            arrays[split]["features"], ids, None if paths is None else paths.astype(str).tolist()
        )

    sets = {s: feature_set(s) for s in ["train", *parts]}
    if pooled:
        missing = np.setdiff1d(sets["query"].labels, sets["gallery"].labels)
        if missing.size:
            raise EifError(
                f"{where}: {missing.size} query labels have no gallery row "
                f"(e.g. {test_values[missing[0] - c]}); every query needs its class in the gallery"
            )
        q, g = sets["query"], sets["gallery"]
        has_paths = q.paths is not None and g.paths is not None
        sets["test"] = FeatureSet(
            np.concatenate([q.features, g.features]),
            np.concatenate([q.labels, g.labels]),
            q.paths + g.paths if has_paths else None,  # type: ignore[operator]
        )
    return Splits(
        train=sets["train"],
        test=sets["test"],
        query=sets.get("query"),
        gallery=sets.get("gallery"),
        train_class_names=class_names(train_values),
        test_class_names=class_names(test_values),
    )


def export_features(embed_dir: str | Path, out: str | Path) -> Path:
    """Write the features of an ``embed`` artifact (``train.npz``, ``test.npz`` [, ``query.npz``,
    ``gallery.npz``], ``embed.json``) to ``out`` (.npz or .parquet) in the ``dataset=features`` layout.

    Labels are the clean labels; test labels are written as ``C + rank`` so that one ``class_names``
    array names every label."""
    embed_dir, out = Path(embed_dir), Path(out)
    try:
        info = read_json(embed_dir / "embed.json")
    except FileNotFoundError:
        raise EifError(f"{embed_dir} is not an embed artifact (no embed.json)") from None
    splits = ["train", "query", "gallery"] if (embed_dir / "query.npz").is_file() else ["train", "test"]
    names = list(info["train_class_names"])
    test_values = np.unique(np.load(embed_dir / "test.npz")["clean_labels"])
    arrays: dict[str, np.ndarray] = {}
    for split in splits:
        with np.load(embed_dir / f"{split}.npz") as z:
            labels = z["clean_labels"]
            if split != "train":
                labels = len(names) + np.searchsorted(test_values, labels)
            arrays[f"{split}_features"] = z["features"]
            arrays[f"{split}_labels"] = labels.astype(np.int64)
        paths = info["paths"].get(split)
        if paths is not None:
            arrays[f"{split}_paths"] = np.asarray(paths, dtype=str)
    class_names = np.asarray(names + list(info["test_class_names"]), dtype=str)
    if out.suffix.lower() == ".parquet":
        _write_parquet(out, arrays, class_names)
    else:
        save_npz(out, class_names=class_names, **arrays)
    return out


def _write_parquet(out: Path, arrays: dict[str, np.ndarray], class_names: np.ndarray) -> None:
    import pandas as pd

    frames = []
    for key in arrays:
        if key.endswith("_features"):
            split = key.removesuffix("_features")
            labels = arrays[f"{split}_labels"]
            frame = {"split": split, "label": labels, "class_name": class_names[labels]}
            frame["features"] = list(arrays[key])
            if f"{split}_paths" in arrays:
                frame["path"] = arrays[f"{split}_paths"]
            frames.append(pd.DataFrame(frame))
    write_with(out, lambda p: pd.concat(frames, ignore_index=True).to_parquet(p, index=False))


def main(argv: list[str] | None = None) -> None:
    """``python -m eif.data.features export <embed dir> <out.npz|out.parquet>``."""
    parser = argparse.ArgumentParser(
        prog="python -m eif.data.features", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write an embed artifact's features for dataset=features")
    export.add_argument(
        "embed_dir", help="an embed stage output (outputs/store/embed/<key> or artifacts/embed)"
    )
    export.add_argument("out", help="the file to write (.npz or .parquet)")
    args = parser.parse_args(argv)
    try:
        path = export_features(args.embed_dir, args.out)
    except EifError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
