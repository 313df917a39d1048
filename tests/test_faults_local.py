"""End-to-end fault tests without SLURM: real `launch.py` processes, killed with SIGKILL at random
points, run concurrently, or fed corrupted artifacts. The results (model weights, embeddings,
metrics) must equal a clean run's bit for bit, and no half-written artifact may ever be published.
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


def results(store: Path) -> dict[str, object]:
    """Everything a run produces that must be reproducible, read from verified artifacts only."""
    s = ArtifactStore(store)
    out: dict[str, object] = {}
    for stage in ("train", "evaluate", "embed"):
        dirs = [d for d in (store / stage).iterdir() if "." not in d.name and (d / MANIFEST).exists()]
        assert len(dirs) == 1 and s.verify(dirs[0]), dirs
        d = dirs[0]
        if stage == "train":
            ck = load_torch(d / "model.pt")
            out.update({f"train/{part}/{k}": v for part in ("model", "loss") for k, v in ck[part].items()})
        elif stage == "evaluate":
            out.update({f"evaluate/{k}": v for k, v in read_json(d / "metrics.json").items()})
        else:
            for f in sorted(d.glob("*.npz")):
                with np.load(f) as z:
                    out.update({f"embed/{f.stem}/{k}": z[k] for k in z.files})
    return out


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
    wait_for((store, "train/*.partial/ckpt/last.pt"), proc)
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


def test_repeated_crash_injection(tmp_path: Path, clean: dict[str, object]) -> None:
    """At least 20 SIGKILLs at random times across train -> evaluate -> embed. After every kill no
    published artifact is incomplete; every completed run equals the clean run; so does the last."""
    store = tmp_path / "store"
    rng = random.Random(20240601)
    kills = completed = attempt = 0
    while kills < 20:
        attempt += 1
        proc = start(store, tmp_path / f"run{attempt}")
        deadline = time.time() + rng.uniform(2.0, 14.0)  # process start-up included
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is None:
            kill(proc)
            kills += 1
            assert_no_partial_published(store)
        else:
            finish(proc)
            completed += 1
            assert_same(results(store), clean)
            for d in store.glob(f"{rng.choice(['train', 'evaluate', 'embed'])}/*"):
                if "." not in d.name:  # force more work for the next attempts
                    os.rename(d, d.with_name(d.name + ".trash.test"))
    finish(start(store, tmp_path / "final"))
    assert_same(results(store), clean)
    print(f"crash injection: {kills} kills, {completed} runs completed in between, {attempt + 1} runs")
