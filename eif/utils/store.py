"""A content-keyed artifact store that is safe for concurrent jobs on a shared filesystem.

Layout: ``<root>/<stage>/<key>/`` holds one stage output. ``key`` is a hash of the config values
that affect that output (and of the keys of the stages it reads), so jobs that differ only in
later-stage settings share it. A directory is *complete* when its ``MANIFEST.json`` exists and every
file it lists has the recorded size and SHA-256. The manifest is written last, atomically, so a
crash at any point leaves either no manifest (the work is redone, resuming from checkpoints kept in
``<key>/ckpt/``) or a complete artifact. A manifest whose files fail verification (truncated,
corrupted, deleted) is discarded and the stage is recomputed.

Exactly one job computes an artifact: it holds ``<key>.lock``, a directory created with ``mkdir``
(atomic on NFS and local disks alike). The holder writes its host, pid and SLURM job id into the
lock and refreshes a heartbeat file. Others wait, polling for the manifest. A lock is stale, and is
broken, when its holder ran on this host and its pid is gone, when it belongs to an earlier run of
the same SLURM job (a requeue), or when its heartbeat is older than ``stale_after_s``.
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

from eif.utils.io import read_json, sha256_file, write_json

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
SCRATCH = "ckpt"  # per-artifact scratch space (resumable checkpoints); never part of the manifest


def spec_key(spec: Any) -> str:
    """A short stable hash of a JSON-serialisable spec (dict keys sorted)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StoreLock:
    """A mkdir-based lock with owner info and a heartbeat; see the module docstring."""

    def __init__(self, path: Path, stale_after_s: float = 120.0, heartbeat_s: float = 10.0,
                 poll_s: float = 0.5) -> None:
        self.path = path
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _owner(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "since": time.time()}

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self.path)
        except FileExistsError:
            if self._is_stale():
                self._break()
            return False
        write_json(self.path / "owner.json", self._owner())
        (self.path / "heartbeat").touch()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True)
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

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        shutil.rmtree(self.path, ignore_errors=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path / "heartbeat")
            except FileNotFoundError:
                return

    def _is_stale(self) -> bool:
        try:
            owner = read_json(self.path / "owner.json")
            beat = (self.path / "heartbeat").stat().st_mtime
        except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
            # Being created right now, or left empty by a crash between mkdir and the owner write.
            try:
                return time.time() - self.path.stat().st_mtime > self.stale_after_s
            except FileNotFoundError:
                return False
        job = os.environ.get("SLURM_JOB_ID")
        if job is not None and owner.get("slurm_job_id") == job and owner.get("pid") != os.getpid():
            return True  # an earlier run of this very SLURM job (requeued): it is gone
        if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
            return True
        return time.time() - beat > self.stale_after_s

    def _break(self) -> None:
        grave = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, grave)  # only one breaker wins the rename
        except OSError:
            return
        log.warning("broke stale lock %s", self.path)
        shutil.rmtree(grave, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class ArtifactStore:
    """Compute-once, verify-on-read storage of stage outputs under ``root``."""

    def __init__(self, root: str | os.PathLike, stale_after_s: float = 120.0) -> None:
        self.root = Path(root)
        self.stale_after_s = stale_after_s

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def verify(self, directory: Path) -> bool:
        """True when ``directory`` has a manifest and every listed file matches it."""
        manifest = directory / MANIFEST
        if not manifest.exists():
            return False
        try:
            entries = read_json(manifest)["files"]
        except (json.JSONDecodeError, KeyError, OSError):
            return False
        for name, meta in entries.items():
            f = directory / name
            try:
                if f.stat().st_size != meta["size"] or sha256_file(f) != meta["sha256"]:
                    return False
            except FileNotFoundError:
                return False
        return True

    def get_or_compute(self, stage: str, key: str, spec: dict[str, Any],
                       compute: Callable[[Path], None], provenance: dict[str, Any] | None = None
                       ) -> tuple[Path, bool]:
        """Return (artifact dir, computed_now). Runs ``compute(dir)`` at most once across jobs."""
        directory = self.path(stage, key)
        if self.verify(directory):
            return directory, False
        lock = StoreLock(directory.with_name(key + ".lock"), stale_after_s=self.stale_after_s)
        if not lock.acquire(until=lambda: self.verify(directory)):
            return directory, False
        try:
            if self.verify(directory):
                return directory, False
            self._discard_incomplete(directory)
            directory.mkdir(parents=True, exist_ok=True)
            compute(directory)
            self._write_manifest(directory, stage, key, spec, provenance or {})
            shutil.rmtree(directory / SCRATCH, ignore_errors=True)
            return directory, True
        finally:
            lock.release()

    def _discard_incomplete(self, directory: Path) -> None:
        """Drop a manifest that failed verification and every file but the resumable scratch."""
        if not directory.exists():
            return
        if (directory / MANIFEST).exists():
            log.warning("artifact %s failed verification; recomputing", directory)
        for child in directory.iterdir():
            if child.name == SCRATCH:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _write_manifest(self, directory: Path, stage: str, key: str, spec: dict[str, Any],
                        provenance: dict[str, Any]) -> None:
        files = {}
        for f in sorted(directory.rglob("*")):
            rel = f.relative_to(directory)
            if not f.is_file() or rel.parts[0] in (SCRATCH, MANIFEST) or f.name.startswith("."):
                continue
            files[str(rel)] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
        write_json(directory / MANIFEST, {"stage": stage, "key": key, "spec": spec,
                                          "provenance": provenance, "files": files,
                                          "created": time.time()})
