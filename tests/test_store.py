"""The artifact store under concurrency, stale locks, corruption and crashes at random points.

Jobs are real processes (forked) that really die (SIGKILL); nothing of the store is mocked.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eif.utils.errors import EifError
from eif.utils.io import read_json, save_npz, write_json
from eif.utils.store import MANIFEST, SCRATCH, ArtifactStore, StoreLock, _process_start

FORK = mp.get_context("fork")
PARTS = 4


def _slow_compute(out: Path, log: Path, delay: float) -> None:
    """A resumable 'stage': PARTS arrays, progress in ckpt/, each step logged to ``log``."""
    ckpt = out / SCRATCH
    ckpt.mkdir(exist_ok=True)
    done = read_json(ckpt / "progress.json")["done"] if (ckpt / "progress.json").exists() else 0
    with open(log, "a") as fh:
        fh.write(f"start {os.getpid()} at {done}\n")
    for i in range(done, PARTS):
        time.sleep(delay)
        write_json(ckpt / "progress.json", {"done": i + 1})
    rng = np.random.default_rng(0)
    for i in range(PARTS):  # written only at the end, so a kill lands between files too
        save_npz(out / f"part{i}.npz", x=rng.standard_normal((256, 256)).astype(np.float32))
        time.sleep(delay / 4)
    write_json(
        out / "metrics.json",
        {"sum": float(sum(np.load(out / f"part{i}.npz")["x"].sum() for i in range(PARTS)))},
    )


def _job(root: str, log: str, delay: float, result: str | None = None) -> None:
    store = ArtifactStore(root, stale_after_s=30)
    directory, computed = store.get_or_compute(
        "train", "k", {"a": 1}, lambda d: _slow_compute(d, Path(log), delay)
    )
    if result is not None:
        write_json(result, {"dir": str(directory), "computed": computed})


def _starts(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_compute_once_then_reuse(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    calls: list[Path] = []

    def compute(d: Path) -> None:
        calls.append(d)
        write_json(d / "out.json", {"v": 1})

    d1, c1 = store.get_or_compute("s", "k", {}, compute)
    d2, c2 = store.get_or_compute("s", "k", {}, compute)
    assert (c1, c2) == (True, False) and d1 == d2 == tmp_path / "store" / "s" / "k"
    assert len(calls) == 1 and calls[0].name.startswith(
        "k.partial."
    )  # computed aside (per lock token), renamed
    assert read_json(d1 / "out.json") == {"v": 1}
    assert sorted(p.name for p in d1.parent.iterdir()) == ["k"]  # no lock, work dir or scratch left
    manifest = read_json(d1 / MANIFEST)
    assert set(manifest["files"]) == {"out.json"} and manifest["key"] == "k"


def test_concurrent_jobs_compute_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    procs = [
        FORK.Process(
            target=_job, args=(str(tmp_path / "store"), str(log), 0.05, str(tmp_path / f"r{i}.json"))
        )
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    results = [read_json(tmp_path / f"r{i}.json") for i in range(4)]
    assert sum(r["computed"] for r in results) == 1
    assert len({r["dir"] for r in results}) == 1
    assert len(_starts(log)) == 1
    assert ArtifactStore(tmp_path / "store").verify(Path(results[0]["dir"]))


def test_killed_holder_lock_is_broken_and_work_resumes(tmp_path: Path) -> None:
    root, log = tmp_path / "store", tmp_path / "log"
    p = FORK.Process(target=_job, args=(str(root), str(log), 0.3))
    p.start()

    def progress() -> int:
        found = list((root / "train").glob(f"k.partial.*/{SCRATCH}/progress.json"))
        try:
            return read_json(found[0])["done"] if found else 0
        except (OSError, ValueError):
            return 0

    deadline = time.time() + 30
    while progress() < 2 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert (root / "train" / "k.lock").is_dir()  # left behind by the dead holder
    t0 = time.perf_counter()
    _job(str(root), str(log), 0.01)
    # same host, pid gone: broken at once, not after stale_after_s (30 s)
    assert time.perf_counter() - t0 < 10
    starts = _starts(log)
    assert len(starts) == 2 and int(starts[1].split()[-1]) >= 2  # resumed from the checkpoint
    assert ArtifactStore(root).verify(root / "train" / "k")


def _fake_lock(path: Path, **owner: object) -> None:
    path.mkdir(parents=True)
    write_json(
        path / "owner.json",
        {
            "host": "elsewhere",
            "pid": 1,
            "pid_start": 0,
            "slurm_job_id": None,
            "slurm_restart": 0,
            "token": "t",
            "since": 0.0,
            **owner,
        },
    )
    (path / "heartbeat").touch()


def test_foreign_lock_is_stale_only_after_its_heartbeat_stops(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    _fake_lock(path)
    lock = StoreLock(path, stale_after_s=0.4, poll_s=0.05)
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:  # a live holder on another host: heartbeat moves
        os.utime(path / "heartbeat", (time.time(), time.time() + random.random()))
        assert not lock.try_acquire()
        time.sleep(0.05)
    assert path.is_dir()
    t0 = time.monotonic()
    assert lock.acquire()  # heartbeat frozen: broken after ~0.4 s of the waiter's own clock
    assert 0.35 < time.monotonic() - t0 < 3
    assert lock.held()
    lock.release()
    assert not path.exists()


def test_requeued_slurm_job_breaks_its_own_old_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    path = tmp_path / "k.lock"
    _fake_lock(path, slurm_job_id="4242", slurm_restart=0)
    lock = StoreLock(path, stale_after_s=60)
    assert not lock.try_acquire() and not lock.try_acquire()  # another task of the same run: live
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert not lock.try_acquire()  # this attempt breaks the old run's lock ...
    assert lock.try_acquire()  # ... and the next one takes it
    assert read_json(path / "owner.json")["slurm_restart"] == 1
    lock.release()


def test_recycled_pid_does_not_keep_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    start = _process_start(os.getpid())
    assert start is not None
    _fake_lock(path, host=socket.gethostname(), pid=os.getpid(), pid_start=start + 1)
    lock = StoreLock(path, stale_after_s=60)
    assert not lock.try_acquire() and lock.try_acquire()
    lock.release()
    _fake_lock(path, host=socket.gethostname(), pid=os.getpid(), pid_start=start)
    assert not StoreLock(path, stale_after_s=60).try_acquire() and path.is_dir()  # the real owner


def test_release_and_break_never_remove_a_newer_lock(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    mine = StoreLock(path, heartbeat_s=0.05)
    assert mine.try_acquire()
    stale_view = read_json(path / "owner.json")
    mine.release()
    other = StoreLock(path)
    assert other.try_acquire()
    mine._break(stale_view)  # judged stale from an old owner record: must put the new lock back
    assert other.held()
    mine.release()  # not ours any more: a no-op
    assert other.held()
    other.release()
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_artifact_is_detected_and_recomputed(tmp_path: Path, damage: str) -> None:
    store = ArtifactStore(tmp_path / "store")
    log = tmp_path / "log"
    d, _ = store.get_or_compute("train", "k", {}, lambda w: _slow_compute(w, log, 0.0))
    reference = {f.name: f.read_bytes() for f in d.iterdir() if f.name != MANIFEST}
    target = d / "part2.npz"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    else:
        (d / MANIFEST).write_text(json.dumps({"files": {"part2.npz": {"size": 1}}})[:20])
    assert not store.verify(d)
    d2, computed = store.get_or_compute("train", "k", {}, lambda w: _slow_compute(w, log, 0.0))
    assert computed and d2 == d and store.verify(d)
    assert {f.name: f.read_bytes() for f in d.iterdir() if f.name != MANIFEST} == reference
    assert len(_starts(log)) == 2


def test_finished_work_dir_is_published_without_recompute(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    work = tmp_path / "store" / "s" / "k.partial"
    work.mkdir(parents=True)
    write_json(work / "out.json", {"v": 2})
    (work / SCRATCH).mkdir()
    store._write_manifest(work, "s", "k", {}, {})  # crashed right after writing the manifest

    def boom(d: Path) -> None:
        raise AssertionError("recomputed a finished output")

    d, computed = store.get_or_compute("s", "k", {}, boom)
    assert computed and read_json(d / "out.json") == {"v": 2} and not (d / SCRATCH).exists()


def test_lost_lock_is_not_published(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    lock_path = tmp_path / "store" / "s" / "k.lock"

    def stolen(d: Path) -> None:
        write_json(d / "out.json", {"v": 3})
        os.rename(lock_path, lock_path.with_name("gone"))  # as if a waiter judged us stale ...
        _fake_lock(lock_path)  # ... and took over

    with pytest.raises(EifError, match="lost the store lock"):
        store.get_or_compute("s", "k", {}, stolen)
    assert not (tmp_path / "store" / "s" / "k").exists()
    assert read_json(lock_path / "owner.json")["token"] == "t"  # the new holder's lock survives


def test_sigkill_at_random_points_never_exposes_a_partial_artifact(tmp_path: Path) -> None:
    """30 SIGKILLs at random times while a job computes, publishes and cleans up; after each, the
    published directory is absent or complete. The final artifact equals a clean run's bytes."""
    clean = ArtifactStore(tmp_path / "clean")
    cd, _ = clean.get_or_compute("train", "k", {"a": 1}, lambda d: _slow_compute(d, tmp_path / "clog", 0.0))
    expected = {f.name: f.read_bytes() for f in cd.iterdir() if f.name != MANIFEST}

    root, log = tmp_path / "store", tmp_path / "log"
    store = ArtifactStore(root)
    final = root / "train" / "k"
    rng = random.Random(7)
    kills = 0
    while kills < 30:
        if store.verify(final):  # done: corrupt it so the next job has to redo the work
            (final / "part0.npz").write_bytes(b"half")
        p = FORK.Process(target=_job, args=(str(root), str(log), 0.02))
        p.start()
        time.sleep(rng.uniform(0.0, 0.25))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.join()
        assert not final.exists() or store.verify(final) or (final / "part0.npz").read_bytes() == b"half"
    _job(str(root), str(log), 0.0)
    assert store.verify(final)
    assert {f.name: f.read_bytes() for f in final.iterdir() if f.name != MANIFEST} == expected
    # graves of killed attempts are swept; only staging dirs of killed lock attempts may be left (young)
    assert [p.name for p in (root / "train").iterdir() if ".lock.new." not in p.name] == ["k"]


def test_files_honour_the_umask(tmp_path: Path) -> None:
    """A store shared by a group stays readable by it: files get 0666 minus the umask (mkstemp alone
    would make them 0600), here checked in a fresh process with umask 027."""
    code = (
        "import os, sys; os.umask(0o027); from pathlib import Path; "
        "from eif.utils.store import ArtifactStore; from eif.utils.io import write_json; "
        "store = ArtifactStore(sys.argv[1]); "
        "d, _ = store.get_or_compute('s', 'k', {}, lambda w: write_json(w / 'a.json', {})); "
        "print(oct(os.stat(d / 'a.json').st_mode & 0o777), oct(os.stat(d / 'MANIFEST.json').st_mode & 0o777))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout.split()
    assert out == ["0o640", "0o640"], out
