"""Nothing silently wrong (issue 23), fast in-process checks: a diverging training stops with one line
and keeps nothing, non-finite inputs and embeddings are refused after the cast to float32, a repeated
row is refused, a rewritten file with its mtime restored is re-hashed, a forged checkpoint is skipped,
review files are validated whole, lock staging dirs do not outlive their key, and empty class folders
are named by folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eif.data import build_data
from eif.data.base import ArrayImageSet, DataBundle, NoiseInfo
from eif.data.features import make_splits, read_features
from eif.data.fingerprint import FileIndex, check_bundle
from eif.evaluation.knn import kmeans, knn
from eif.mislabel import clean
from eif.training.trainer import Trainer
from eif.utils.errors import EifError
from eif.utils.io import save_checked, save_npz, write_json
from eif.utils.store import MANIFEST, ArtifactStore
from tests.conftest import compose_cfg
from tests.fixtures import make_features, make_imagefolder, make_oml_csv
from tests.test_data_dataframe import _cfg as dataframe_cfg
from tests.test_trainer_resume import small_trainer


def _trainer(tmp_path: Path, overrides: list[str]) -> Trainer:
    """The small CNN on 100 random 28x28 images (5 classes), checkpoints in ``tmp_path / "ckpt"``."""
    return small_trainer(tmp_path, tmp_path / "ckpt", tuple(overrides))


# ----------------------------------------------------------------------------- 1. finite or nothing
def test_a_huge_learning_rate_stops_training_at_the_first_non_finite_loss(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, ["train.optimizer.lr_head=1e30", "train.checkpoint_every_batches=1"])
    with pytest.raises(EifError) as err:
        trainer.fit()
    msg = str(err.value)
    assert "\n" not in msg and "diverged at epoch 1, batch 2" in msg, msg
    assert "learning rates" in msg and "lr_head=1e+30" in msg
    assert not (tmp_path / "ckpt").exists()  # a resume would diverge again: no checkpoints are kept


def test_features_near_1e30_stop_training_naming_the_input_scale(tmp_path: Path) -> None:
    """The head on precomputed vectors of magnitude 1e30 (finite in float32) diverges at once: one line,
    nothing published, no lock, no work directory."""
    from eif.pipeline import run_job

    made = make_features(tmp_path / "f")
    save_npz(
        tmp_path / "f" / "features.npz",
        **{k: v * 1e30 if k.endswith("_features") else v for k, v in made.items()},
    )
    overrides = ["dataset=features", f"dataset.path={tmp_path}/f/features.npz", "stages=[train,evaluate]"]
    with pytest.raises(EifError) as err:
        run_job(compose_cfg(tmp_path, [*overrides, "train.epochs=1", "train.warmup_epochs=0"], tiny=False))
    msg = str(err.value)
    assert (
        "\n" not in msg and "diverged at epoch 1, batch 1" in msg and "likely cause: the input scale" in msg
    )
    left = sorted(p.name for p in (tmp_path / "store").rglob("*"))
    assert left == ["train"], left  # the stage dir only: no artifact, lock, staging or work dir


def test_float64_features_beyond_float32_are_refused(tmp_path: Path) -> None:
    made = make_features(tmp_path)
    arrays = {k: v.astype(np.float64) if k.endswith("_features") else v for k, v in made.items()}
    arrays["train_features"][3, 1] = 1e300  # finite as float64, inf as the float32 training sees
    save_npz(tmp_path / "features.npz", **arrays)
    with pytest.raises(EifError, match=r"train_features holds 1 values that are NaN or infinite as float32"):
        make_splits(*read_features(tmp_path / "features.npz"), str(tmp_path / "features.npz"))


def test_non_finite_embeddings_and_faiss_errors_are_one_line() -> None:
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    x[3, 2] = np.nan
    for call in (lambda: knn(x, None, k=2), lambda: kmeans(x, 2)):
        with pytest.raises(EifError, match=r"1 of 20 embeddings hold 1 NaN or infinite values") as err:
            call()
        assert "\n" not in str(err.value)
    y = np.ones((20, 4))
    y[5, 0] = 1e300  # finite as float64, inf as the float32 faiss searches
    with pytest.raises(EifError, match="1 of 20 embeddings"):
        knn(y, None, k=2)


# ----------------------------------------------------------------------------- 2. duplicates
def test_a_repeated_validation_row_is_refused_before_training(tmp_path: Path) -> None:
    make_oml_csv(tmp_path, flags="both")
    table = pd.read_csv(tmp_path / "df.csv", dtype=str, keep_default_na=False)
    val = table[table["split"] == "validation"]
    pd.concat([table, val.iloc[[2]]]).to_csv(tmp_path / "df.csv", index=False)
    first_line = int(val.index[2]) + 2
    with pytest.raises(EifError) as err:
        build_data(dataframe_cfg(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and repr(val["path"].iloc[2]) in msg, msg
    assert f"2 times (lines {first_line}, {len(table) + 2}; validation)" in msg and "1 repeated row" in msg


def test_a_validation_image_also_in_train_is_refused_but_two_boxes_of_one_image_are_not(
    tmp_path: Path,
) -> None:
    make_oml_csv(tmp_path, flags="both")
    table = pd.read_csv(tmp_path / "df.csv", dtype=str, keep_default_na=False)
    moved = table.copy()
    first_val = int(np.flatnonzero(moved["split"] == "validation")[0])
    moved.loc[first_val, "path"] = moved.loc[0, "path"]  # a training image listed again for validation
    moved.to_csv(tmp_path / "df.csv", index=False)
    with pytest.raises(EifError, match=r"2 times \(lines 2, \d+; train and validation\)"):
        build_data(dataframe_cfg(tmp_path))

    boxed = pd.concat([table, table.iloc[[0]]], ignore_index=True)
    for c, a, b in (("x_1", 0, 1), ("y_1", 0, 1), ("x_2", 8, 9), ("y_2", 8, 9)):
        boxed[c] = str(a)
        boxed.loc[len(boxed) - 1, c] = str(b)  # the same file, another box: another sample
    boxed.to_csv(tmp_path / "df.csv", index=False)
    assert len(build_data(dataframe_cfg(tmp_path)).train) == int((table["split"] == "train").sum()) + 1


def test_exact_content_copies_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 8, 8), dtype=np.uint8)
    images[7] = images[2]  # a test image equal to a training image
    labels = np.arange(12) % 3
    noise = NoiseInfo(0.0, "uniform", np.zeros(0, np.int64), np.zeros(0, np.int64))
    bundle = DataBundle(
        ArrayImageSet(images[:6], labels[:6]),
        ArrayImageSet(images[6:], labels[6:] + 3),
        None,
        None,
        3,
        ["a", "b", "c"],
        ["d", "e", "f"],
        noise,
    )
    with caplog.at_level(logging.WARNING):
        check = check_bundle(bundle, None, 1, False)
    assert check.duplicates == ["test[1] = train[2]"]
    assert "1 sample repeats the content of an earlier one (test[1] = train[2])" in caplog.text


# ----------------------------------------------------------------------------- 3. restored mtime
def test_a_rewritten_file_with_its_mtime_restored_is_hashed_again(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    a, b = bytes(range(256)) * 4, bytes(reversed(range(256))) * 4
    (root / "x.png").write_bytes(a)
    index = FileIndex(root, tmp_path / "cache")
    before = index.lookup(["x.png"])[0].digest
    st = (root / "x.png").stat()
    time.sleep(0.05)  # past the file system's timestamp granularity, so the ctime moves
    with open(root / "x.png", "r+b") as fh:  # in place: same inode, same size
        fh.write(b)
    os.utime(root / "x.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    after = (root / "x.png").stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    again = FileIndex(root, tmp_path / "cache").lookup(["x.png"])[0].digest
    assert again != before


# ----------------------------------------------------------------------------- 4. forged checkpoint
class _Forged:
    """Pickles as a call of os.system: a checkpoint loader that honoured it would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_forged_checkpoint_is_skipped_for_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trained = _trainer(tmp_path, [])
    assert trained.fit() is not None
    newest = trained.checkpoints()[0]
    marker = tmp_path / "executed"
    forged = newest.with_name("e9999-b0000000.ckpt")  # newest by name, correct checksum
    save_checked(forged, {"epoch": 9999, "payload": _Forged(marker)})
    fresh = _trainer(tmp_path, [])
    with caplog.at_level(logging.WARNING):
        assert fresh.try_resume()
    assert not marker.exists() and not forged.exists()
    assert fresh.state.epoch == 2  # resumed from the real newest checkpoint
    assert "e9999-b0000000.ckpt cannot be loaded" in caplog.text


# ----------------------------------------------------------------------------- 5. review files
def _review(path: Path, rows: list[tuple[object, ...]], names: bool = False) -> Path:
    cols = ["id", "old_label_id", "new_label_id", "decision"] + (["old_label", "new_label"] if names else [])
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("rows", "names", "message"),
    [
        ([("587.7", 1, 2, "accept")], False, "line 2: id must be a whole number, got '587.7'"),
        ([(1, 1, "2.6", "change")], False, "line 2: new_label_id must be a whole number, got '2.6'"),
        ([(1, 1, 2, "change", "b", "d")], True, "new_label 'd' contradicts new_label_id 2 ('c')"),
        ([(1, 1, 2, "change", "x", "c")], True, "old_label 'x' is not a training class of this run"),
    ],
)
def test_review_values_are_never_coerced(
    tmp_path: Path, rows: list[tuple[object, ...]], names: bool, message: str
) -> None:
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    path = _review(tmp_path / "r.csv", rows, names)
    with pytest.raises(EifError, match="clean.labels") as err:
        clean.from_review(path, labels, 5, *([list("abcde")] if names else []))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_review_integers_written_as_floats_and_matching_names_pass(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    path = _review(
        tmp_path / "r.csv", [("1.0", 1, 3, "change", "b", "d"), (2, 2, "", "reject", "c", "")], True
    )
    review = clean.from_review(path, labels, num_classes=5, class_names=list("abcde"))
    np.testing.assert_array_equal(review.labels, [0, 3, 2, 3, 4, 0, 1, 2])


def test_review_names_are_compared_as_written_with_csv_injection_escaping_undone(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2])
    names = ["=cmd", " b", "c"]
    path = _review(tmp_path / "r.csv", [(0, 0, 1, "change", "'=cmd", " b")], True)
    review = clean.from_review(path, labels, 3, names)
    np.testing.assert_array_equal(review.labels, [1, 1, 2])
    bad = _review(tmp_path / "bad.csv", [(0, 0, 1, "change", "'=cmd", "b")], True)
    with pytest.raises(EifError, match="new_label 'b' is not a training class"):
        clean.from_review(bad, labels, 3, names)


def test_a_review_names_the_run_it_came_from(tmp_path: Path) -> None:
    from eif.mislabel.review_file import check_origin, read_review

    path = tmp_path / "r.csv"
    keys = json.dumps({"train": "abc", "embed": "e1"}).replace('"', '""')
    rows = "".join(f'{i},1,2,accept,"{keys}","[""seed=3"", ""stages=[report]""]"\n' for i in (1, 2))
    path.write_text("id,old_label_id,new_label_id,decision,store_keys,overrides\n" + rows)
    table = read_review(path)
    check_origin(table, path, {"train": "abc", "clean": "x"})  # the same model: accepted
    check_origin(table, path, {"embed": "e1"})  # no train stage planned: nothing to compare
    with pytest.raises(
        EifError,
        match=r"its train artifact is abc, this run's is def\): run clean where it "
        r"came from: python launch.py seed=3 stages=\[clean\] clean.labels=",
    ):
        check_origin(table, path, {"train": "def"})


def test_a_review_of_another_run_is_refused_before_any_compute(
    tmp_path: Path, fmnist_available: None
) -> None:
    from eif.pipeline import run_job

    path = tmp_path / "r.csv"
    keys = json.dumps({"train": "0123456789abcdef"}).replace('"', '""')
    path.write_text(f'id,old_label_id,new_label_id,decision,store_keys,overrides\n1,1,2,accept,"{keys}",[]\n')
    store = tmp_path / "store"
    with pytest.raises(EifError, match=r"exported by another run .* python launch.py stages=\[clean\]"):
        run_job(compose_cfg(tmp_path, ["stages=[clean]", f"clean.labels={path}", f"paths.store_dir={store}"]))
    assert not store.exists() or not any(store.rglob("MANIFEST.json"))


def test_a_malformed_review_fails_before_any_compute(tmp_path: Path, fmnist_available: None) -> None:
    from eif.pipeline import run_job

    path = _review(tmp_path / "r.csv", [(10**6, 1, 2, "accept")])
    store = tmp_path / "store"
    t0 = time.perf_counter()
    with pytest.raises(EifError, match=r"names training id 1000000, outside 0\.\.299"):
        run_job(compose_cfg(tmp_path, ["stages=[clean]", f"clean.labels={path}", f"paths.store_dir={store}"]))
    assert time.perf_counter() - t0 < 10
    assert not store.exists() or not any(store.iterdir())  # nothing written, no empty clean/ dir


# ----------------------------------------------------------------------------- 6. small ones
def test_lock_staging_dirs_of_dead_jobs_are_swept_when_their_key_is_published(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    import socket

    store = ArtifactStore(tmp_path)
    staging = tmp_path / "s" / "k.lock.new.deadbeef"  # a job SIGKILLed between mkdir and rename
    staging.mkdir(parents=True)
    write_json(staging / "owner.json", {"host": socket.gethostname(), "pid": pid, "pid_start": 1})
    live = tmp_path / "s" / "k.lock.new.cafecafe"  # younger, of a live process: may become the lock
    live.mkdir()
    write_json(
        live / "owner.json",
        {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _start(os.getpid())},
    )
    store.get_or_compute("s", "k", {}, lambda out: (out / "a").write_text("1"))
    assert (tmp_path / "s" / "k" / MANIFEST).is_file()
    assert not staging.exists() and live.exists()

    orphan = tmp_path / "s" / "k.lock.new.0badf00d"  # no owner file yet, older than stale_after_s
    orphan.mkdir()
    old = time.time() - 1000
    os.utime(orphan, (old, old))
    store.get_or_compute("s", "k", {}, lambda out: None)  # reused: swept too
    assert not orphan.exists() and live.exists()


def _start(pid: int) -> int | None:
    from eif.utils.store import _process_start

    return _process_start(pid)


def test_an_empty_class_folder_is_named_by_folder(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, per_class=3)
    (tmp_path / "zebra").mkdir()
    with pytest.raises(EifError, match=r"1 class folder under .* holds no images \('zebra'\)"):
        build_data(dataframe_cfg(tmp_path, _target_="eif.data.folders.ImageFolder", name="imagefolder"))
