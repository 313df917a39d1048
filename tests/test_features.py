"""``dataset=features``: precomputed feature vectors, exported from an eif model or written by hand, train a
head (``model=features_head``) and run every later stage unchanged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from eif.config import load_job
from eif.data.features import Features, FeatureSet, export_features, main
from eif.pipeline import Env, plan_keys, run_job
from eif.utils.errors import EifError
from eif.utils.io import read_json, save_npz, write_json
from tests.conftest import compose_cfg, launch
from tests.fixtures import make_features, make_imagefolder

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
STAGES = "stages=[train,evaluate,embed,mine,influence,retrain,stats]"


def test_fashion_mnist_features_train_a_head_and_run_every_stage(
    tmp_path: Path, fmnist_available: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Train the small CNN briefly, export its features, then ``launch.py dataset=features`` runs train (head
    only), evaluate, embed, mine, influence, retrain and stats on them; the image model's own head, loaded
    onto the features, reproduces the image model's embeddings and confusions."""
    image = run_job(compose_cfg(tmp_path / "img", ["stages=[train,evaluate,embed,mine]"]))
    out = tmp_path / "fmnist_features.npz"
    capsys.readouterr()
    main(["export", image["artifacts"]["embed"], str(out)])
    assert capsys.readouterr().out.strip() == str(out)
    with np.load(out) as z:
        assert z["train_features"].shape == (300, 256) and z["test_features"].shape == (300, 256)
        assert z["class_names"].tolist()[:5] == FASHION_NAMES

    t0 = time.perf_counter()
    # train.epochs=2 with the default 5 warm-up epochs: a head on features has no trunk to warm up
    proc = launch([f"dataset.path={out}", "dataset=features", STAGES, "train.epochs=2"], tmp_path, tiny=False)
    seconds = time.perf_counter() - t0
    print(f"launch.py dataset=features ({STAGES}) on 300 + 300 vectors: {seconds:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_json(tmp_path / "run" / "run.json")
    assert set(run["compute_seconds"]) == {
        "train",
        "evaluate",
        "embed",
        "mine",
        "influence",
        "retrain_features",
        "retrain",
        "stats",
    }
    assert run["resolved"]["model.feature_dim"] == 256
    assert run["resolved"]["dataset.batch.classes_per_batch"] == 5
    art = {k: Path(v) for k, v in run["artifacts"].items()}
    history = read_json(art["train"] / "history.json")
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) for h in history)
    metrics = read_json(art["evaluate"] / "metrics.json")
    assert 0.4 < metrics["recall@1"] <= metrics["recall@8"] <= 1.0  # chance is 0.2
    info = read_json(art["embed"] / "embed.json")
    assert info["train_class_names"] == FASHION_NAMES and info["feature_dim"] == 256
    with np.load(art["embed"] / "train.npz") as z:
        assert z["features"].shape == (300, 256) and z["embeddings"].shape == (300, 64)
    influence = read_json(art["influence"] / "influence.json")
    assert {(a["kind"], a["method"]) for a in influence["analyses"]} >= {("pair", "eif"), ("pair", "if")}
    with np.load(art["retrain"] / "distances.npz") as z:
        assert np.isfinite(z["pair_delta_eif"]).all() and z["pair_delta_eif"].size > 0
    assert (art["stats"] / "table1.md").is_file()

    # The image model's head and proxies on its own (exported) features: the same embeddings and confusions.
    cfg = compose_cfg(
        tmp_path / "head",
        [
            "dataset=features",
            f"dataset.path={out}",
            f"model.checkpoint={Path(image['artifacts']['train']) / 'model.pt'}",
            "model.layer_norm=false",  # the exported features are LayerNorm'ed already
            "stages=[embed,mine]",
            "logger=none",
            "device=cpu",
        ],
        tiny=False,
    )
    head = run_job(cfg)
    for split in ("train", "test"):
        with np.load(Path(head["artifacts"]["embed"]) / f"{split}.npz") as a:
            with np.load(Path(image["artifacts"]["embed"]) / f"{split}.npz") as b:
                np.testing.assert_allclose(a["embeddings"], b["embeddings"], rtol=0, atol=1e-5)
    with np.load(Path(head["artifacts"]["mine"]) / "mine.npz") as a:
        with np.load(Path(image["artifacts"]["mine"]) / "mine.npz") as b:
            np.testing.assert_array_equal(a["pairs"], b["pairs"])


def _embed_dir(root: Path, query_gallery: bool = False) -> Path:
    """A hand-made embed artifact: 3 train classes, 2 test classes (ids 7 and 9), D = 4."""
    rng = np.random.default_rng(0)
    splits = {"train": np.repeat([0, 1, 2], 4), "test": np.repeat([7, 9], 3)}
    if query_gallery:
        splits.update(query=np.array([7, 9]), gallery=np.array([7, 7, 9, 9]))
        splits["test"] = np.concatenate([splits["query"], splits["gallery"]])
    for name, labels in splits.items():
        save_npz(
            root / f"{name}.npz",
            features=rng.normal(size=(labels.size, 4)).astype(np.float32),
            embeddings=rng.normal(size=(labels.size, 2)).astype(np.float32),
            labels=labels,
            clean_labels=labels,
        )
    paths = {name: [f"img/{name}_{k}.png" for k in range(len(labels))] for name, labels in splits.items()}
    write_json(
        root / "embed.json",
        {"train_class_names": ["a", "b", "c"], "test_class_names": ["g", "i"], "paths": paths},
    )
    return root


@pytest.mark.parametrize("query_gallery", [False, True])
def test_npz_and_parquet_read_the_same(tmp_path: Path, query_gallery: bool) -> None:
    embed = _embed_dir(tmp_path / "embed", query_gallery)
    loaded = []
    for suffix in (".npz", ".parquet"):
        path = export_features(embed, tmp_path / f"features{suffix}")
        loaded.append(Features(name="features", path=str(path), **_COMMON).load())
    a, b = loaded
    for split in ("train", "test", "query", "gallery"):
        x, y = getattr(a, split), getattr(b, split)
        if not query_gallery and split in ("query", "gallery"):
            assert x is None and y is None
            continue
        assert isinstance(x, FeatureSet) and isinstance(y, FeatureSet)
        np.testing.assert_array_equal(x.features, y.features)
        np.testing.assert_array_equal(x.labels, y.labels)
        assert x.paths == y.paths
    assert a.train_class_names == b.train_class_names == ["a", "b", "c"]
    assert a.test_class_names == b.test_class_names == ["g", "i"]
    assert a.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted(set(a.test.labels.tolist())) == [3, 4]  # C + rank
    with np.load(embed / "train.npz") as z:
        np.testing.assert_array_equal(a.train.features, z["features"])
        # an item is the vector as a D-channel 1x1 image, unchanged by the (identity) transform
        item = a.train.with_transform(Features.model_fields["transforms"].default.build("eval"))[5][0]
        assert item.shape == (4, 1, 1) and torch.equal(item.flatten(), torch.from_numpy(z["features"][5]))


_COMMON = {
    "noise_rule": "uniform",
    "batch": {"classes_per_batch": "auto", "samples_per_class": "auto"},
    "recall_at": [1],
    "influence_transform": "eval",
}


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good() -> dict[str, np.ndarray]:
    x = np.zeros((6, 3), np.float32)
    return {
        "train_features": x,
        "train_labels": np.array([0, 0, 1, 1, 2, 2]),
        "test_features": x,
        "test_labels": np.array([3, 3, 4, 4, 5, 5]),
    }


BAD_FILES = [
    ("unknown array", {"train_label": np.zeros(6)}, "unknown arrays ['train_label']"),
    ("no test split", {"test_features": None, "test_labels": None}, "give a test split"),
    (
        "NaN",
        {"test_features": np.full((6, 3), np.nan, np.float32)},
        "test_features holds 18 values that are NaN or infinite",
    ),
    (
        "other D",
        {"test_features": np.zeros((6, 4), np.float32)},
        "test_features has D=4, the train features D=3",
    ),
    ("label count", {"train_labels": np.zeros(5, np.int64)}, "train_labels must be 6 integers or strings"),
    ("float labels", {"train_labels": np.zeros(6)}, "train_labels must be 6 integers or strings"),
    ("objects", {"train_paths": np.array([None] * 6, dtype=object)}, "cannot read without pickle"),
    ("unnamed label", {"class_names": np.array(["a", "b"])}, "label 2 has no class name"),
    ("query only", {"query_features": np.zeros((1, 3)), "query_labels": np.array([3])}, "not both"),
    (
        "query without gallery class",
        {
            "test_features": None,
            "test_labels": None,
            "query_features": np.zeros((1, 3)),
            "query_labels": np.array([9]),
            "gallery_features": np.zeros((2, 3)),
            "gallery_labels": np.array([3, 4]),
        },
        "1 query labels have no gallery row (e.g. 9)",
    ),
]


@pytest.mark.parametrize("what,change,needle", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_feature_files_fail_in_one_line(tmp_path: Path, what: str, change: dict, needle: str) -> None:
    arrays = {k: v for k, v in {**_good(), **change}.items() if v is not None}
    path = _write(tmp_path / "f.npz", **arrays)
    with pytest.raises(EifError) as err:
        Features(name="features", path=str(path), **_COMMON).load()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_missing_and_unknown_files_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(EifError, match="is not a file; set dataset.path"):
        Features(name="features", path=str(tmp_path / "none.npz"), **_COMMON).load()
    (tmp_path / "f.csv").write_text("a,b\n")
    with pytest.raises(EifError, match="unknown file type '.csv'; use .npz or .parquet"):
        Features(name="features", path=str(tmp_path / "f.csv"), **_COMMON).load()


def _cfg(tmp_path: Path, overrides: list[str]) -> object:
    cfg = compose_cfg(tmp_path, [*overrides, "logger=none", "device=cpu"], tiny=False)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def test_features_and_image_models_do_not_mix(tmp_path: Path) -> None:
    make_features(tmp_path / "f")
    make_imagefolder(tmp_path / "img")
    with pytest.raises(EifError, match="holds feature vectors, not images: use model=features_head"):
        plan_keys(
            _cfg(tmp_path, ["dataset=features", f"dataset.path={tmp_path}/f/features.npz", "model=small_cnn"])
        )
    with pytest.raises(EifError, match="model=features_head takes precomputed feature vectors"):
        plan_keys(
            _cfg(tmp_path, ["dataset=imagefolder", f"dataset.root={tmp_path}/img", "model=features_head"])
        )


def test_keys_follow_the_vectors_not_the_file(tmp_path: Path) -> None:
    arrays = make_features(tmp_path / "a")
    keys = lambda d: plan_keys(_cfg(tmp_path, ["dataset=features", f"dataset.path={d}/features.npz"]))  # noqa: E731
    first = keys(tmp_path / "a")
    make_features(tmp_path / "b")  # the same arrays elsewhere
    assert keys(tmp_path / "b") == first
    arrays["train_features"][0, 0] += 1.0
    np.savez(tmp_path / "b" / "features.npz", **arrays)
    changed = keys(tmp_path / "b")
    assert changed["train"] != first["train"]
    arrays["train_paths"][0] = "elsewhere.jpg"
    np.savez(tmp_path / "b" / "features.npz", **arrays)
    assert keys(tmp_path / "b")["train"] != changed["train"]


def test_features_resolve_their_size_and_batch(tmp_path: Path) -> None:
    make_features(tmp_path / "f", dim=8, train_classes=4, per_class=6)
    env = Env(load_job(_cfg(tmp_path, ["dataset=features", f"dataset.path={tmp_path}/f/features.npz"])), None)
    job = env.job
    assert (job.model.in_channels, job.model.feature_dim) == (8, 8)
    assert (job.dataset.batch.classes_per_batch, job.dataset.batch.samples_per_class) == (4, 2)
    assert env.bundle.train_class_names == ["class 0", "class 1", "class 2", "class 3"]
    model = job.model.build()
    x = torch.from_numpy(env.bundle.train.features[:3])
    torch.testing.assert_close(model.features(x[..., None, None]), torch.nn.functional.layer_norm(x, (8,)))
    assert not list(model.trunk.parameters())
