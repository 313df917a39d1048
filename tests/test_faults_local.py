"""End-to-end fault tests without SLURM: real `launch.py` processes, killed with SIGKILL inside every
stage, run concurrently (also four started in the same second), frozen with SIGSTOP past their lock,
or fed corrupted artifacts. The results (weights, embeddings, metrics, influence scores, re-training,
tables) must equal a clean run's bit for bit, and no half-written artifact may ever be published.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from eif.stages import registry
from eif.utils.io import load_torch, read_json
from eif.utils.store import MANIFEST, ArtifactStore

ROOT = Path(__file__).resolve().parents[1]
# Real Fashion-MNIST, small CNN: 1,000 train images, 3 epochs of 25 batches, a checkpoint every 4
# batches; about 10 s per run on one core. Every stage that follows training is included.
FAULT_CFG = [
    "dataset.max_per_class=200",
    "train.epochs=3",
    "train.warmup_epochs=1",
    "train.checkpoint_every_batches=4",
    "logger=none",
    "device=cpu",
    "stages=[train,evaluate,embed]",
]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "WANDB_MODE": "disabled",
    "PYTHONPATH": str(ROOT),
    "EIF_ROOT": str(ROOT),
}

# End-to-end runs of ~10-30 s each: all marked slow.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/usr/share/datasets/fashion-mnist").is_dir(),
        reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)",
    ),
]


def start(store: Path, run: Path, extra: list[str] | None = None) -> subprocess.Popen:
    """Start ``launch.py`` in its own process group (so a kill takes any workers with it)."""
    cmd = [
        sys.executable,
        str(ROOT / "launch.py"),
        *FAULT_CFG,
        f"paths.store_dir={store}",
        f"hydra.run.dir={run}",
        *(extra or []),
    ]
    return subprocess.Popen(
        cmd,
        env=ENV,
        cwd=run.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def results(store: Path, stages: tuple[str, ...] = ("train", "evaluate", "embed")) -> dict[str, object]:
    """Everything a run produces that must be reproducible, read from verified artifacts only
    (wall times and rendered figures excepted)."""
    s = ArtifactStore(store)
    out: dict[str, object] = {}
    for stage in stages:
        dirs = [d for d in (store / stage).iterdir() if "." not in d.name and (d / MANIFEST).exists()]
        assert len(dirs) == 1 and s.verify(dirs[0]), (stage, dirs)
        for f in sorted(p for p in dirs[0].rglob("*") if p.is_file() and p.name != MANIFEST):
            name = f"{stage}/{f.relative_to(dirs[0])}"
            if f.suffix == ".pt":
                ck = load_torch(f)
                out.update(
                    {f"{name}/{part}/{k}": v for part in ("model", "loss") for k, v in ck[part].items()}
                )
            elif f.suffix == ".npz":
                with np.load(f) as z:
                    out.update({f"{name}/{k}": z[k] for k in z.files})
            elif f.suffix == ".json":
                out[name] = _without_times(read_json(f))
            elif f.suffix in (".csv", ".md") and not f.name.startswith("runtime"):
                out[name] = f.read_text()
    return out


def _without_times(obj: object) -> object:
    if isinstance(obj, dict):
        timing = ("seconds", "images_per_s", "knn_s")
        return {k: _without_times(v) for k, v in obj.items() if not any(t in k for t in timing)}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), k
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y), k
        else:
            assert x == y, k


def assert_no_partial_published(store: Path) -> None:
    """Every published artifact (a stage dir without the .partial/.lock suffixes) verifies."""
    s = ArtifactStore(store)
    for d in store.glob("*/*"):
        if d.is_dir() and "." not in d.name:
            assert s.verify(d), f"published but incomplete: {d}"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("clean")
    finish(start(base / "store", base / "run"))
    return results(base / "store")


def wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, timeout: float = 120) -> None:
    root, pattern = path_glob
    end = time.time() + timeout
    while not any(root.glob(pattern)):
        assert proc.poll() is None, "the run ended before the awaited file appeared"
        assert time.time() < end, f"timed out waiting for {pattern}"
        time.sleep(0.05)


def test_sigkill_mid_training_resumes_from_checkpoint(tmp_path: Path, clean: dict[str, object]) -> None:
    store = tmp_path / "store"
    proc = start(store, tmp_path / "run1")
    wait_for((store, "train/*.partial*/ckpt/*.ckpt"), proc)
    time.sleep(0.5)  # a few more steps past the first checkpoint
    kill(proc)
    assert not list(store.glob("train/*/MANIFEST.json"))  # killed before training finished
    out = finish(start(store, tmp_path / "run2"))
    assert "resuming training at epoch" in out
    assert_same(results(store), clean)


def test_corrupted_artifacts_are_recomputed(tmp_path: Path, clean: dict[str, object]) -> None:
    store = tmp_path / "store"
    finish(start(store, tmp_path / "run1"))
    model = next(store.glob("train/*/model.pt"))
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
    emb = next(store.glob("embed/*/train.npz"))
    data = bytearray(emb.read_bytes())
    data[-200] ^= 0x01  # one flipped bit, same size
    emb.write_bytes(bytes(data))
    out = finish(start(store, tmp_path / "run2"))
    assert out.count("failed verification; recomputing") == 2
    assert "stage train computed" in out and "stage embed computed" in out
    assert_same(results(store), clean)


def test_two_jobs_at_once_train_once(tmp_path: Path, clean: dict[str, object]) -> None:
    store = tmp_path / "store"
    procs = [start(store, tmp_path / f"run{i}") for i in range(2)]
    outs = [finish(p) for p in procs]
    assert sum(o.count("stage train computed") for o in outs) == 1
    assert sum(o.count("stage train: reusing") for o in outs) == 1
    keys = [read_json(tmp_path / f"run{i}" / "run.json")["keys"] for i in range(2)]
    assert keys[0] == keys[1]
    models = [
        load_torch(tmp_path / f"run{i}" / "artifacts" / "train" / "model.pt")["model"] for i in range(2)
    ]
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])
    assert_same(results(store), clean)


ALL_STAGES = tuple(registry())  # every stage, in pipeline order (dependencies first)
# Every stage, with label noise so that detect and relabel have flips to find.
ALL_CFG = [
    "noise=p10",
    "methods.if.solver.scale=auto",
    "stats.group_sizes=[3,4,5]",
    "train.checkpoint_every_batches=4",
    f"stages=[{','.join(s for s in ALL_STAGES if s != 'retrain_features')}]",
]


@pytest.fixture(scope="module")
def clean_all(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("clean_all")
    finish(start(base / "store", base / "run", ALL_CFG))
    return results(base / "store", ALL_STAGES)


def _started(store: Path, stage: str) -> bool:
    """The stage began computing (its lock is held) or, for report, rendering (its output exists)."""
    if stage == "report":
        return any(store.glob("report/*/MANIFEST.json"))
    return any(store.glob(f"{stage}/*.lock"))


def test_sigkill_campaign_over_every_stage(tmp_path: Path, clean_all: dict[str, object]) -> None:
    """Two rounds of SIGKILLs aimed at every stage from train to report (at least 25 kills): each
    attempt waits until its target stage is running, then kills the job after a random delay.
    After every kill no published artifact is incomplete; the final results equal the clean run."""
    rng = random.Random(20261201)
    kills, hit, attempt = 0, [], 0
    for round_ in range(2):
        store = tmp_path / f"store{round_}"
        for stage in ALL_STAGES:
            for _ in range(2 if stage in ("train", "influence", "retrain") else 1):
                attempt += 1
                proc = start(store, tmp_path / f"run{attempt}", ALL_CFG)
                while proc.poll() is None and not _started(store, stage):
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.4))
                if proc.poll() is None:
                    kill(proc)
                    kills += 1
                    hit.append(stage)
                    assert_no_partial_published(store)
                else:
                    finish(proc)
        finish(start(store, tmp_path / f"final{round_}", ALL_CFG))
        assert_same(results(store, ALL_STAGES), clean_all)
    print(f"SIGKILL campaign: {kills} kills in {attempt} runs, aimed at {sorted(set(hit))}")
    assert kills >= 25, (kills, hit)
    assert set(hit) >= {"train", "embed", "influence", "retrain", "detect", "report"}, hit


def test_four_jobs_started_in_the_same_second(tmp_path: Path, clean: dict[str, object]) -> None:
    """Same settings, same second, default run dirs: all succeed, each has its own run dir, training
    happens once, and every job links the same artifacts."""
    args = [*FAULT_CFG, f"paths.root_dir={tmp_path}"]
    cmd = [sys.executable, str(ROOT / "launch.py"), *args]
    procs = [
        subprocess.Popen(
            cmd, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(4)
    ]
    outs = [finish(p) for p in procs]
    runs = sorted((tmp_path / "outputs" / "runs").glob("*/*/run.json"))
    assert len(runs) == 4, runs
    records = [read_json(r) for r in runs]
    assert all(r["keys"] == records[0]["keys"] for r in records)
    assert sum(o.count("stage train computed") for o in outs) == 1
    assert_same(results(tmp_path / "outputs" / "store"), clean)
    for r in runs:
        linked = load_torch(r.parent / "artifacts" / "train" / "model.pt")["model"]
        assert all(torch.equal(linked[k], clean[f"train/model.pt/model/{k}"]) for k in linked)


def test_frozen_holder_that_lost_its_lock_exits_without_writing(
    tmp_path: Path, clean: dict[str, object]
) -> None:
    """Job A is SIGSTOPped while training; job B breaks A's stale lock, takes over its checkpoints and
    publishes. Resumed, A stops at its next write with one line and touches nothing of B's."""
    store = tmp_path / "store"
    lock = ["store.stale_after_s=3", "store.heartbeat_s=0.5", "train.checkpoint_every_batches=2"]
    a = start(store, tmp_path / "runA", lock)
    wait_for((store, "train/*.partial*/ckpt/*.ckpt"), a)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        b = start(store, tmp_path / "runB", lock)
        out_b = finish(b)
        assert "broke stale lock" in out_b and "resuming training at epoch" in out_b, out_b[-3000:]
        published = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    finally:
        os.kill(a.pid, signal.SIGCONT)
    out_a, _ = a.communicate(timeout=120)
    assert a.returncode == 1, out_a[-3000:]
    assert "error: lost the store lock for train/" in out_a
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == published
    assert not list(store.rglob("*.partial*")), list(store.rglob("*.partial*"))
    assert_same(results(store), clean)


# ------------------------------------------------------------------ nothing silently wrong (issue 23)
def cli(store: Path, run: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``launch.py`` with only ``args`` (no FAULT_CFG), the store and run dir given; output merged."""
    cmd = [sys.executable, str(ROOT / "launch.py"), *args, f"paths.store_dir={store}", f"hydra.run.dir={run}"]
    return subprocess.run(
        cmd,
        env=ENV,
        cwd=run.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def assert_one_line_and_nothing_kept(proc: subprocess.CompletedProcess, store: Path, expect: str) -> str:
    """Exit non-zero with one ``error:`` line (no traceback) containing ``expect``; nothing published,
    no lock, no lock staging dir, no work dir left in the store."""
    out = proc.stdout
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert expect in errors[0], errors[0]
    left = [p.relative_to(store).as_posix() for p in store.glob("*/*")] if store.exists() else []
    assert left == [], left
    return errors[0]


def test_a_nan_diverging_job_ends_in_one_line_and_publishes_nothing(tmp_path: Path) -> None:
    """``train.optimizer.lr_head=1e30`` (was: a NaN model published, then SIGABRT in faiss leaving a lock
    and a partial dir): one line naming epoch, batch and the learning rate; nothing kept."""
    store = tmp_path / "store"
    proc = start(store, tmp_path / "run", ["train.optimizer.lr_head=1e30"])
    out, _ = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out)
    line = assert_one_line_and_nothing_kept(result, store, "error: training diverged at epoch 1, batch ")
    assert "likely cause: the learning rates" in line and "lr_head=1e+30" in line
    again = start(store, tmp_path / "run2", ["train.optimizer.lr_head=1e30"])  # re-runs fail the same way
    out2, _ = again.communicate(timeout=300)
    assert again.returncode != 0 and line in out2


def test_features_near_1e30_end_in_one_line(tmp_path: Path) -> None:
    from tests.fixtures import make_features

    made = make_features(tmp_path / "f")
    arrays = {k: v * 1e30 if k.endswith("_features") else v for k, v in made.items()}
    np.savez(tmp_path / "f" / "features.npz", **arrays)
    store = tmp_path / "store"
    args = ["dataset=features", f"dataset.path={tmp_path}/f/features.npz", "logger=none", "device=cpu"]
    args += ["train.epochs=2", "train.warmup_epochs=0", "stages=[train,evaluate,embed]"]
    proc = cli(store, tmp_path / "run", args)
    line = assert_one_line_and_nothing_kept(proc, store, "error: training diverged at epoch 1, batch 1")
    assert "likely cause: the input scale" in line


def test_a_duplicate_row_table_is_refused_before_training(tmp_path: Path) -> None:
    """A ``dataset=dataframe`` table listing every validation row twice (was: exit 0, recall@1 0.967 ->
    1.000, each image its own neighbour) is refused before anything is computed."""
    import pandas as pd

    from tests.fixtures import make_oml_csv

    make_oml_csv(tmp_path / "oml", flags="both")
    table = pd.read_csv(tmp_path / "oml" / "df.csv", dtype=str, keep_default_na=False)
    pd.concat([table, table[table["split"] == "validation"]]).to_csv(tmp_path / "oml" / "df.csv", index=False)
    store = tmp_path / "store"
    args = [
        "dataset=dataframe",
        f"dataset.root={tmp_path}/oml",
        "model=small_cnn",
        "logger=none",
        "device=cpu",
    ]
    proc = cli(store, tmp_path / "run", [*args, "stages=[train,evaluate]"])
    line = assert_one_line_and_nothing_kept(proc, store, "2 times (lines ")
    n_val = int((table["split"] == "validation").sum())
    assert f"{n_val} repeated rows in all" in line


def _bmp_folder(root: Path, classes: int = 4, per_class: int = 8) -> list[Path]:
    """An image folder of 16x16 RGB BMPs (uncompressed: every file has the same size)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    files = []
    for c in range(classes):
        for j in range(per_class):
            path = root / f"c{c}" / f"{j:02d}.bmp"
            path.parent.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 64, size=3) * 4
            Image.fromarray((base + rng.integers(0, 40, size=(16, 16, 3))).astype(np.uint8)).save(path)
            files.append(path)
    return files


def test_restored_mtime_swap_recomputes_training(tmp_path: Path) -> None:
    """Swapping the bytes of images in place (same size, same inode, mtime restored) changes the data:
    the next run trains again instead of reusing the old model (the file cache keys on ctime too)."""
    files = _bmp_folder(tmp_path / "data")
    store = tmp_path / "store"
    args = ["dataset=imagefolder", f"dataset.root={tmp_path}/data", "logger=none", "device=cpu"]
    args += ["train.epochs=1", "train.warmup_epochs=0", "stages=[train]", f"paths.cache_dir={tmp_path}/cache"]
    first = cli(store, tmp_path / "run1", args)
    assert first.returncode == 0 and "stage train computed" in first.stdout, first.stdout[-3000:]
    time.sleep(0.05)  # past the file system's timestamp granularity
    for a, b in zip(files[:8], files[-8:]):  # class c0's images swapped with class c3's
        sa, sb = a.stat(), b.stat()
        da, db = a.read_bytes(), b.read_bytes()
        assert len(da) == len(db)
        for path, data, st in ((a, db, sa), (b, da, sb)):
            with open(path, "r+b") as fh:
                fh.write(data)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    second = cli(store, tmp_path / "run2", args)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "stage train computed" in second.stdout and "stage train: reusing" not in second.stdout
    keys = [read_json(tmp_path / r / "run.json")["keys"]["train"] for r in ("run1", "run2")]
    assert keys[0] != keys[1]


class _Forged:
    """Pickles as a call of os.system: a loader that honoured it would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_forged_checkpoint_is_reported_and_skipped(tmp_path: Path, clean: dict[str, object]) -> None:
    """A checkpoint with a correct checksum whose payload pickles ``os.system`` (was: an
    UnpicklingError traceback on every re-run) is not executed, is reported on one line, and training
    resumes from the previous checkpoint to the clean run's exact results."""
    from eif.utils.io import save_checked

    store = tmp_path / "store"
    proc = start(store, tmp_path / "run1")
    wait_for((store, "train/*.partial*/ckpt/*.ckpt"), proc)
    time.sleep(0.5)
    kill(proc)
    (ckpt_dir,) = {p.parent for p in store.glob("train/*.partial*/ckpt/*.ckpt")}
    marker = tmp_path / "executed"
    save_checked(ckpt_dir / "e9999-b0000000.ckpt", {"epoch": 9999, "payload": _Forged(marker)})
    out = finish(start(store, tmp_path / "run2"))
    assert "e9999-b0000000.ckpt cannot be loaded" in out and "resuming training at epoch" in out
    assert not marker.exists()
    assert_same(results(store), clean)


def test_a_malformed_review_file_fails_in_seconds_on_an_empty_store(tmp_path: Path) -> None:
    review = tmp_path / "review.csv"
    review.write_text("id,old_label_id,new_label_id,decision\n587.7,1,2,accept\n")
    store = tmp_path / "store"
    t0 = time.perf_counter()
    args = [
        "dataset.max_per_class=200",
        "logger=none",
        "device=cpu",
        "stages=[clean]",
        f"clean.labels={review}",
    ]
    proc = cli(store, tmp_path / "run", args, timeout=120)
    seconds = time.perf_counter() - t0
    assert_one_line_and_nothing_kept(proc, store, "id must be a whole number, got '587.7'")
    # Refused while the job is validated, before the run starts (its first line) and the data are read.
    # The wall time is mostly importing torch (8 s of CPU here); the bound catches a check that runs late.
    assert "run dir:" not in proc.stdout and seconds < 60, (seconds, proc.stdout[-2000:])
