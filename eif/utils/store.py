# pyright: strict
"""A content-keyed artifact store that is safe for concurrent jobs on a shared filesystem.

Layout under ``<root>/<stage>/``:

- ``<key>/`` a complete stage output. ``key`` hashes the config values that affect it (and the keys
  of the stages it reads), so jobs that differ only in later-stage settings share it. It holds
  ``MANIFEST.json`` (size and SHA-256 of every file) and is only ever created by renaming a finished
  work directory, so it never exists half-written. Reads verify it; a manifest whose files fail
  verification (truncated, corrupted, deleted) gets the directory moved aside and recomputed.
- ``<key>.partial.<token>/`` the work directory of the job computing it, named after its lock
  token. Its ``ckpt/`` subdirectory is scratch space for resumable checkpoints that survives a crash:
  the next lock holder renames the newest earlier work directory to its own name (taking it over)
  and resumes from its checkpoints; everything else in it is discarded first. Every write into a
  work directory first checks that the lock is still held (:func:`eif.utils.io.guarded`), so a job
  that lost its lock (frozen past ``stale_after_s``) stops before its next write and never touches
  the new holder's files: its own paths are gone once the work directory was taken over.
- ``<key>.lock/`` held by the one job computing ``<key>``. It is created by renaming a private
  directory that already holds ``owner.json`` (host, pid and its start time, SLURM job id and restart
  count, a random token) onto the lock name; rename onto an existing directory fails, atomically, on
  local disks and NFS alike. The holder touches ``heartbeat`` every ``heartbeat_s`` seconds and
  checks that it still holds the lock before publishing.

A job killed between creating its private lock staging directory (``<key>.lock.new.<token>``) and
renaming it leaves that directory behind. Staging directories are swept whenever their key is
published, found published, or its lock is broken: those whose owner ran on this host and is gone, or
that are older than ``stale_after_s`` (a younger one of a live process may be about to become the lock).

Others wait, polling for the manifest. A lock is stale, and is broken, when its holder ran on this
host and that process is gone, when it is an earlier run of the same SLURM job (a requeue), or when
its heartbeat has not changed for ``stale_after_s`` seconds of the waiter's own clock (no clock skew
between nodes involved). A job frozen longer than that (e.g. ``scontrol suspend``, SIGSTOP) loses its
lock and fails with one line at its next write instead of publishing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eif.utils.io import LockLost, guarded, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
SCRATCH = "ckpt"  # per-artifact scratch space (resumable checkpoints); never part of the manifest
PARTIAL = ".partial"  # suffix of the work directory
LOCK = ".lock"  # suffix of the lock directory


def spec_key(spec: Any) -> str:
    """A short stable hash of a JSON-serialisable spec (dict keys sorted)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), None if gone.

    Together with the pid it names a process uniquely, so a recycled pid is not mistaken for the owner.
    Zombies count as gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _bury(path: Path) -> None:
    """Remove a directory tree so nobody sees it half-deleted: rename it aside first."""
    grave = path.with_name(f"{path.name}.trash.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    shutil.rmtree(grave, ignore_errors=True)


def _staging_is_stale(staging: Path, stale_after_s: float) -> bool:
    """True when the lock staging directory ``staging`` can be removed: its owner ran on this host and
    that process is gone, or it is older than ``stale_after_s`` seconds."""
    try:
        owner: dict[str, Any] = read_json(staging / "owner.json")
    except (OSError, json.JSONDecodeError):
        owner = {}
    if owner.get("host") == socket.gethostname():
        pid = int(owner.get("pid", -1))
        if pid <= 0 or _process_start(pid) != owner.get("pid_start"):
            return True
    try:
        return time.time() - staging.stat().st_mtime > stale_after_s
    except FileNotFoundError:
        return False


def sweep_staging(lock_path: Path, stale_after_s: float) -> None:
    """Remove the stale staging directories (``<lock>.new.<token>``) of the lock at ``lock_path``."""
    for staging in lock_path.parent.glob(f"{lock_path.name}.new.*"):
        if staging.is_dir() and _staging_is_stale(staging, stale_after_s):
            shutil.rmtree(staging, ignore_errors=True)


class StoreLock:
    """A rename-based lock with owner info and a heartbeat; see the module docstring."""

    def __init__(
        self, path: Path, stale_after_s: float = 120.0, heartbeat_s: float = 10.0, poll_s: float = 0.5
    ) -> None:
        self.path = path
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # (owner token, heartbeat mtime, time.monotonic() when that pair was first seen)
        self._seen: tuple[str, float, float] | None = None

    def _owner(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "token": self.token,
            "since": time.time(),
        }

    def try_acquire(self) -> bool:
        """One attempt: True when the lock is now ours; breaks a stale lock (and returns False)."""
        if self.path.exists():  # cheap check first: held (or stale) locks are the common case
            return self._break_if_stale()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f"{self.path.name}.new.{self.token[:8]}")
        staging.mkdir(exist_ok=True)
        write_json(staging / "owner.json", self._owner())
        (staging / "heartbeat").touch()
        try:
            os.rename(staging, self.path)  # fails when a lock directory is already there
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return self._break_if_stale()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="eif-lock-heartbeat")
        self._thread.start()
        return True

    def acquire(self, until: Callable[[], bool] | None = None) -> bool:
        """Block until the lock is held (True) or ``until()`` becomes true first (False)."""
        while True:
            if until is not None and until():
                return False
            if self.try_acquire():
                return True
            time.sleep(self.poll_s)

    def held(self) -> bool:
        """True while the lock directory is still the one this object created."""
        try:
            return read_json(self.path / "owner.json").get("token") == self.token
        except (OSError, json.JSONDecodeError):
            return False

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, unless somebody else holds it by now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.held():
            _bury(self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():  # broken while this job was frozen: never touch the new holder's lock
                return
            try:
                os.utime(self.path / "heartbeat")
            except FileNotFoundError:
                return

    def _break_if_stale(self) -> bool:
        """Break the current lock if it is stale. Always False: the caller has not acquired anything."""
        owner = self._stale_owner()
        if owner is not None:
            self._break(owner)
        return False

    def _stale_owner(self) -> dict[str, Any] | None:
        """The owner record of the current lock when that lock is stale, else None."""
        owner: dict[str, Any]
        try:
            owner = read_json(self.path / "owner.json")
        except FileNotFoundError:
            if not self.path.is_dir():
                return None  # released meanwhile
            owner = {}  # not made by this class (every lock it makes has an owner): judged by age alone
        except (OSError, json.JSONDecodeError):
            owner = {}
        try:
            beat = (self.path / "heartbeat").stat().st_mtime
        except OSError:
            try:
                beat = self.path.stat().st_mtime
            except OSError:
                return None
        job = os.environ.get("SLURM_JOB_ID")
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        requeued = owner.get("slurm_job_id") == job and int(owner.get("slurm_restart", 0)) < restart
        if job is not None and requeued:
            return owner  # an earlier run of this very SLURM job, which was requeued: it is gone
        if owner.get("host") == socket.gethostname():
            pid = int(owner.get("pid", -1))
            if pid <= 0 or _process_start(pid) != owner.get("pid_start"):
                return owner
        seen = (str(owner.get("token")), beat)
        if self._seen is None or self._seen[:2] != seen:
            self._seen = (*seen, time.monotonic())
            return None
        return owner if time.monotonic() - self._seen[2] > self.stale_after_s else None

    def _break(self, owner: dict[str, Any]) -> None:
        """Remove the stale lock judged from ``owner``; put it back if it turned out to be newer."""
        grave = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, grave)  # only one breaker wins the rename
        except OSError:
            return
        try:
            taken = read_json(grave / "owner.json").get("token")
        except (OSError, json.JSONDecodeError):
            taken = None
        if taken != owner.get("token"):  # replaced by a live lock between our check and the rename
            try:
                os.rename(grave, self.path)
                return
            except OSError:
                log.error("lock %s: a live lock was broken and could not be restored", self.path)
        log.warning(
            "broke stale lock %s (host %s, pid %s, SLURM job %s)",
            self.path,
            owner.get("host"),
            owner.get("pid"),
            owner.get("slurm_job_id"),
        )
        shutil.rmtree(grave, ignore_errors=True)
        sweep_staging(self.path, self.stale_after_s)


class ArtifactStore:
    """Compute-once, verify-on-read storage of stage outputs under ``root``."""

    def __init__(
        self, root: str | os.PathLike[str], stale_after_s: float = 120.0, heartbeat_s: float = 10.0
    ) -> None:
        self.root = Path(root)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = min(heartbeat_s, stale_after_s / 4)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def verify(self, directory: Path) -> bool:
        """True when ``directory`` has a manifest and every listed file matches it."""
        try:
            entries = read_json(directory / MANIFEST)["files"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return False
        for name, meta in entries.items():
            f = directory / name
            try:
                if f.stat().st_size != meta["size"] or sha256_file(f) != meta["sha256"]:
                    return False
            except OSError:
                return False
        return True

    def get_or_compute(
        self,
        stage: str,
        key: str,
        spec: dict[str, Any],
        compute: Callable[[Path], None],
        provenance: dict[str, Any] | None = None,
    ) -> tuple[Path, bool]:
        """Return (artifact dir, computed_now). Runs ``compute(work dir)`` at most once across jobs.

        ``compute`` writes its files into the directory it is given; ``<that dir>/ckpt/`` persists
        across crashed attempts for resumable checkpoints and is deleted once the output is complete.
        """
        directory = self.path(stage, key)
        lock_path = directory.with_name(key + LOCK)
        if self.verify(directory):
            sweep_staging(lock_path, self.stale_after_s)
            return directory, False
        lock = StoreLock(lock_path, stale_after_s=self.stale_after_s, heartbeat_s=self.heartbeat_s)
        if not lock.acquire(until=lambda: self.verify(directory)):
            return directory, False
        work = directory.with_name(f"{key}{PARTIAL}.{lock.token[:12]}")
        try:
            if self.verify(directory):
                return directory, False
            if directory.exists():
                log.warning("artifact %s failed verification; recomputing", directory)
                _bury(directory)
            self._sweep(directory, lock)
            self._take_over(directory, work)
            with guarded(work, lambda: None if lock.held() else _lost(lock, stage, key, self.stale_after_s)):
                if not self.verify(work):  # a crash after the manifest was written needs only the rename
                    self._clear_for_retry(work)
                    work.mkdir(parents=True, exist_ok=True)
                    try:
                        compute(work)
                    except LockLost:
                        raise
                    except BaseException:
                        self._drop_if_empty(work)
                        raise
                    self._write_manifest(work, stage, key, spec, provenance or {})
                if not lock.held():
                    raise LockLost(_lost(lock, stage, key, self.stale_after_s))
                shutil.rmtree(work / SCRATCH, ignore_errors=True)
            os.rename(work, directory)
            return directory, True
        finally:
            lock.release()
            if directory.is_dir():
                sweep_staging(lock_path, self.stale_after_s)

    def _take_over(self, directory: Path, work: Path) -> None:
        """Rename the newest earlier work directory of this key (a crashed or frozen attempt) to
        ``work``, so its checkpoints resume here and its old owner's paths are gone; bury the rest."""
        earlier = sorted(
            (p for p in directory.parent.glob(f"{directory.name}{PARTIAL}*") if p.is_dir() and p != work),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for i, old in enumerate(earlier):
            if i == 0:
                try:
                    os.rename(old, work)
                    continue
                except OSError:
                    pass
            _bury(old)

    @staticmethod
    def _drop_if_empty(work: Path) -> None:
        """After a failed attempt keep only resumable checkpoints; no empty work directories."""
        try:
            ArtifactStore._clear_for_retry(work)
            scratch = work / SCRATCH
            if not (scratch.is_dir() and any(scratch.iterdir())):
                shutil.rmtree(work, ignore_errors=True)
        except OSError:
            pass

    def _sweep(self, directory: Path, lock: StoreLock) -> None:
        """Remove what killed jobs left next to ``directory``: half-deleted graves of artifacts and
        locks, and stale lock staging dirs (:func:`sweep_staging`)."""
        for grave in directory.parent.glob(f"{directory.name}.*"):
            prefixes = (f"{directory.name}.trash.", f"{lock.path.name}.trash.", f"{lock.path.name}.stale.")
            if grave.name.startswith(prefixes):
                shutil.rmtree(grave, ignore_errors=True)
        sweep_staging(lock.path, self.stale_after_s)

    @staticmethod
    def _clear_for_retry(work: Path) -> None:
        """Drop every file of an earlier failed attempt except the resumable scratch."""
        if not work.exists():
            return
        for child in work.iterdir():
            if child.name == SCRATCH:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    @staticmethod
    def _write_manifest(
        directory: Path, stage: str, key: str, spec: dict[str, Any], provenance: dict[str, Any]
    ) -> None:
        files = {}
        for f in sorted(directory.rglob("*")):
            rel = f.relative_to(directory)
            if not f.is_file() or rel.parts[0] in (SCRATCH, MANIFEST) or f.name.startswith("."):
                continue
            files[rel.as_posix()] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
        write_json(
            directory / MANIFEST,
            {
                "stage": stage,
                "key": key,
                "spec": spec,
                "provenance": provenance,
                "files": files,
                "created": time.time(),
            },
        )


def _lost(lock: StoreLock, stage: str, key: str, stale_after_s: float) -> str:
    return (
        f"lost the store lock for {stage}/{key} (this job was frozen for more than {stale_after_s:.0f} s?); "
        "another job computes it: re-run the same command to reuse its result"
    )
