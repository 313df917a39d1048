"""Store keys come from what each stage reads.

- Every leaf of the composed config, for every data set, either changes at least one stage key or
  is declared unkeyed next to its setting (``setting(..., unkeyed=...)``). A new setting cannot be
  added without deciding which.
- Keys follow the data's identity, not its location: another folder recomputes, a copy of the same
  data is reused, an edited label file or a deleted image recomputes training and what follows.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from eif.config import load_job
from eif.pipeline import Env, plan_keys, run_job
from eif.settings import dump, unkeyed_paths
from eif.utils.errors import EifError
from eif.utils.io import write_text
from tests.conftest import ROOT, compose_cfg
from tests.fixtures import (
    make_cars,
    make_cub,
    make_features,
    make_imagefolder,
    make_inshop,
    make_oml_csv,
    write_image,
)

# Per data set (``<dataset>`` or ``<dataset>+<model>``): fixture writer and the overrides that let
# the fixture's few classes form batches (``{root}``: the fixture's directory).
DATASETS: dict[str, tuple[Any, list[str]]] = {
    "fashion_mnist": (None, []),
    "cub": (make_cub, []),
    "cars": (make_cars, []),
    "inshop": (make_inshop, ["dataset.batch.classes_per_batch=4", "dataset.batch.samples_per_class=2"]),
    "imagefolder": (make_imagefolder, []),
    "imagefolder+torchvision": (make_imagefolder, ["model=torchvision"]),
    "imagefolder+timm": (make_imagefolder, ["model=timm"]),
    "features": (make_features, ["dataset.path={root}/features.npz"]),
    "dataframe": (
        make_oml_csv,
        ["dataset.batch.classes_per_batch=2", "dataset.batch.samples_per_class=2"],
    ),
}
# Values a leaf can take that the generic perturbations below cannot guess.
HINTS = {
    "dataset.train_classes": [["ant", "bee"], [1, 2, 3, 4, 0]],
    "dataset.test_classes": [["fox", "eel"], [5, 6, 7, 8]],
    "retrain.methods": [["eif"], ["if"]],
    "model.arch": ["resnet34"],
}
# Values for a leaf that is `auto`; the one it resolves to is skipped (it gives the same key by design).
AUTO_HINTS = {
    "model.in_channels": [1, 3],
    "model.feature_dim": [8, 16, 512],
    "dataset.transforms.to_rgb": [True, False],
    "dataset.transforms.mean": [[0.5], [0.5, 0.5, 0.5]],
    "dataset.transforms.std": [[0.25], [0.25, 0.25, 0.25]],
    "dataset.transforms.train": [{"name": "random_resized_crop", "size": 12}, {"name": "none"}],
    "dataset.transforms.eval": [{"name": "resize_center_crop", "resize": 12, "crop": 12}, {"name": "none"}],
    "dataset.transforms.influence": [{"name": "resize", "resize": 12}, {"name": "none"}],
    "dataset.batch.classes_per_batch": [2, 3],
    "dataset.batch.samples_per_class": [1, 2, 3],
    "train.warmup_epochs": [0, 1],
}
# Leaves with no other valid value in a composition, and why (the test cannot vary them alone).
FIXED = {
    "model.pretrained": "small_cnn and features_head have no pretrained weights",
    "model.in_channels": "the data's channels (resnet50 with ImageNet weights: 3; features: D)",
    "model.feature_dim": "resnet50's and torchvision's trunks fix it; features_head: the vectors' D",
    "dataset.transforms.to_rgb": "the fixtures mix grayscale and RGB images: only RGB conversion fits",
    "methods.if.solver.kind": "a solver's kind comes with its own fields (LiSSA's scale is no CG setting)",
    "methods.if_converged.solver.kind": "a solver's kind comes with its own fields",
    "methods.if_converged_low.solver.kind": "a solver's kind comes with its own fields",
}
WORDS = (
    "index distance euclidean inner_product eval influence shift uniform augmented harmful all entropy "
    "reference eif if lissa cg exact auto pair group missim none resize"
).split()


def _compose(name: str, root: Path | None, extra: list[str]) -> Any:
    GlobalHydra.instance().clear()
    overrides = [f"dataset={name.partition('+')[0]}", *(e.format(root=root) for e in extra)]
    overrides += [f"dataset.root={root}"] if root else []
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root or ".")
    return cfg


def _at(tree: Any, path: str) -> Any:
    for part in path.split("."):
        tree = tree[part]
    return tree


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, resolved value) of every leaf; lists count as leaves."""
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += leaves(value, path + ".") if value else [(path, value)]
        else:
            out.append((path, value))
    return out


def candidates(path: str, value: Any, hints: dict[str, list[Any]], picked: Any) -> list[Any]:
    """Other values for a leaf, most plausible first; for an ``auto`` leaf, values other than the one
    it resolved to (``picked``: the resolved job)."""
    if value == "auto":
        assert path in AUTO_HINTS, f"{path} is auto, but AUTO_HINTS has no values for it"
        was = _at(picked, path)
        return [c for c in AUTO_HINTS[path] if not _same(c, was)]
    return [c for c in _candidates(path, value, hints) if c != value]


def _same(candidate: Any, resolved: Any) -> bool:
    """A candidate equals a resolved value (a transform step: the fields it gives)."""
    if isinstance(candidate, dict) and isinstance(resolved, dict):
        return candidate.items() <= resolved.items()
    return candidate == resolved


def _candidates(path: str, value: Any, hints: dict[str, list[Any]]) -> list[Any]:
    if path in hints:
        return hints[path]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2, 1, 2]
    if isinstance(value, float):
        return [value * 2, value / 2, value + 0.1, 0.3, 0.05, 0.9]
    if isinstance(value, str):
        return [w for w in WORDS if w != value] + ["x"]
    if value is None:
        return [1, 0.5, 7, True, "x"]
    if isinstance(value, dict):  # a transform step
        return [
            {"name": "none"},
            {"name": "resize", "resize": 32},
            {"name": "resize_center_crop", "resize": 32, "crop": 24},
        ]
    if isinstance(value, list):
        out: list[Any] = []
        if len(value) > 1:
            out += [value[:-1], value[1:], value[::-1]]
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            out += [[v * 1.5 for v in value], [v + 1 for v in value]]
        return out + [value + value[-1:]]
    return []


def declared(path: str, unkeyed: dict[str, str]) -> bool:
    return any(path == d or path.startswith(d + ".") for d in unkeyed)


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_config_leaf_changes_a_key_or_is_declared_unkeyed(
    name: str, tmp_path: Path, fmnist_if_needed: None
) -> None:
    if name.endswith("+timm"):
        pytest.importorskip("timm", reason="timm is not installed (pip install 'eif[timm]')")
    maker, extra = DATASETS[name]
    root = None
    if maker is not None:
        root = tmp_path / "data"
        maker(root)
    cfg = _compose(name, root, extra)
    cache = tmp_path / "cache"
    base = plan_keys(cfg, cache_dir=cache)
    job = load_job(cfg, check_stages=False)
    unkeyed = unkeyed_paths(job)
    picked = dump(Env(job, cache).job)  # the values the auto leaves resolve to
    resolved = OmegaConf.to_container(cfg, resolve=True)
    review = tmp_path / "review.csv"  # clean.labels must name a file
    write_text(review, "id,old_label_id,new_label_id,decision\n")
    weights = (
        tmp_path / "weights.pth"
    )  # model.weights (torchvision, timm) must name a file; its content is hashed
    write_text(weights, "")
    hints = {**HINTS, "clean.labels": [str(review)], "model.weights": [str(weights)]}
    checked, fixed, silent = [], [], []
    for path, value in leaves(resolved):
        if declared(path, unkeyed) or path.endswith("_target_"):
            continue  # _target_ is keyed as the settings class name; the rest by declaration
        target = path
        if path.startswith("dataset.transforms.") and path.endswith(".name"):  # a step comes with its fields
            target = path.rsplit(".", 1)[0]
            value = {"name": value}
        for candidate in candidates(target, value, hints, picked):
            trial = cfg.copy()
            with open_dict(trial):
                OmegaConf.update(trial, target, candidate, merge=False)
            try:
                keys = plan_keys(trial, cache_dir=cache)
            except EifError:
                continue  # not a valid value for this leaf (or this data); try the next one
            if keys == base:
                silent.append(f"{path}={candidate!r}")
            checked.append(path)
            break
        else:
            fixed.append(path)
    assert not silent, f"{name}: these leaves change no store key and are not declared unkeyed: {silent}"
    assert len(checked) >= 40, checked
    assert set(fixed) <= set(FIXED), fixed


@pytest.fixture
def fmnist_if_needed(request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params.get("name") == "fashion_mnist":
        request.getfixturevalue("fmnist_available")


# ---------------------------------------------------------------- data identity, end to end

TINY_FOLDER = [
    "dataset=imagefolder",
    "model=small_cnn",
    "model.in_channels=3",
    "dataset.transforms.to_rgb=true",
    "dataset.transforms.train={name: random_resized_crop, size: 16, scale: [0.5, 1.0]}",
    "dataset.transforms.eval={name: resize_center_crop, resize: 16, crop: 16}",
    "dataset.transforms.influence={name: resize, resize: 16}",
    "dataset.batch.classes_per_batch=2",
    "dataset.batch.samples_per_class=2",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "logger=none",
    "device=cpu",
    "stages=[train,evaluate]",
]


def _folder(root: Path, seed: int) -> Path:
    """Four classes of five 16x16 RGB images."""
    for c in range(4):
        for j in range(5):
            write_image(root / f"class{c}" / f"{j}.png", 16, 16, seed=seed + 10 * c + j)
    return root


def _run(tmp_path: Path, root: Path, extra: list[str] | None = None) -> dict[str, Any]:
    cfg = compose_cfg(tmp_path, [*TINY_FOLDER, f"dataset.root={root}", *(extra or [])], tiny=False)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return run_job(cfg)


def test_data_identity_not_location_keys_results(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", seed=0)
    first = _run(tmp_path, a)
    assert set(first["compute_seconds"]) == {"train", "evaluate"}
    # another folder with the same layout but other images: a new model
    b = _folder(tmp_path / "b", seed=1000)
    other = _run(tmp_path, b)
    assert set(other["compute_seconds"]) == {"train", "evaluate"}
    assert other["keys"]["train"] != first["keys"]["train"]
    # the same data copied elsewhere: reused, nothing computed
    c = tmp_path / "copy"
    shutil.copytree(a, c)
    copied = _run(tmp_path, c)
    assert copied["compute_seconds"] == {} and copied["keys"] == first["keys"]
    # one image deleted: training and evaluation again
    (c / "class1" / "3.png").unlink()
    deleted = _run(tmp_path, c)
    assert set(deleted["compute_seconds"]) == {"train", "evaluate"}
    # a test image changed in place (same name and size): only evaluation again (class3 is a test class)
    d = tmp_path / "d"
    shutil.copytree(a, d)
    write_image(d / "class3" / "0.png", 16, 16, seed=4242)
    changed = _run(tmp_path, d)
    assert (
        set(changed["compute_seconds"]) == {"evaluate"} and changed["keys"]["train"] == first["keys"]["train"]
    )
    # a folder that does not exist: one error, nothing reused
    with pytest.raises(EifError, match="not a directory"):
        _run(tmp_path, tmp_path / "missing")


def test_edited_label_file_recomputes_training(tmp_path: Path) -> None:
    root = tmp_path / "inshop"
    make_inshop(root)
    extra = [
        "dataset=inshop",
        "dataset.batch.classes_per_batch=4",
        "dataset.batch.samples_per_class=2",
        "evaluate.recall_at=[1,2]",
    ]
    overrides = [o for o in TINY_FOLDER if not o.startswith("dataset=")] + extra
    cfg = compose_cfg(tmp_path, [*overrides, f"dataset.root={root}"], tiny=False)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    first = run_job(cfg)
    again = run_job(cfg)
    assert again["compute_seconds"] == {}
    part = root / "Eval" / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.split()[-1:] == ["train"] and "id_00000003" in ln)
    image, _, status = lines[row].split()
    lines[row] = f"{image} id_00000005 {status}"  # one training image moves to another item (its label)
    write_text(part, "\n".join(lines) + "\n")
    edited = run_job(cfg)
    assert set(edited["compute_seconds"]) == {"train", "evaluate"}
    assert edited["keys"]["train"] != first["keys"]["train"]
