"""Atomic file writes, checksums and write guards.

Every file the project writes goes through :func:`atomic_write`: the bytes land in a temporary file
in the same directory, are flushed and fsync'ed, and are then renamed over the target. A reader
therefore sees either the old file or the complete new one, never a partial one. Files get the
permissions the umask allows (``mkstemp`` alone would make them private to the owner), so a store
shared by a group stays readable by it.

A *guard* (:func:`guarded`) protects a directory that a job owns only while it holds a lock: every
write below it first asks the guard, and a job that lost its lock stops with :class:`LockLost`
before it touches anything (also the directory itself: a write never re-creates a guarded root).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from eif.utils.errors import EifError


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


class LockLost(EifError):
    """A job tried to write into a directory whose lock it no longer holds."""


_guards: list[tuple[Path, Callable[[], str | None]]] = []
_guards_lock = threading.Lock()


@contextmanager
def guarded(directory: Path, check: Callable[[], str | None]) -> Iterator[None]:
    """While active, every write below ``directory`` first calls ``check()``: a message means the
    directory is no longer ours and the write raises :class:`LockLost` with it."""
    entry = (Path(directory).resolve(), check)
    with _guards_lock:
        _guards.append(entry)
    try:
        yield
    finally:
        with _guards_lock:
            _guards.remove(entry)


def check_guard(path: Path) -> None:
    """Raise :class:`LockLost` when ``path`` lies below a guarded directory that is no longer ours."""
    target = Path(path).resolve()
    with _guards_lock:
        active = list(_guards)
    for root, check in active:
        if target == root or root in target.parents:
            problem = check()
            if problem is None and not root.is_dir():
                problem = f"{root} was taken over by another job"
            if problem is not None:
                raise LockLost(problem)


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    check_guard(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        check_guard(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)  # a full disk fails in write(), which names no file
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path) as fh:
        return json.load(fh)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` through an atomic rename."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def load_torch(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`save_torch` (tensors, dicts, lists and plain scalars only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


CHECKED_MAGIC = b"EIFCKPT1"


class CorruptFile(Exception):
    """A checksummed file whose bytes do not match its checksum (or that is not one at all)."""


def save_checked(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` with a SHA-256 of the payload in front: ``EIFCKPT1`` + 32-byte digest + payload."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    write_bytes(path, CHECKED_MAGIC + hashlib.sha256(payload).digest() + payload)


def load_checked(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load a :func:`save_checked` file; :class:`CorruptFile` when a byte changed or it is truncated."""
    data = Path(path).read_bytes()
    head = len(CHECKED_MAGIC) + 32
    if len(data) < head or not data.startswith(CHECKED_MAGIC):
        raise CorruptFile("not a checksummed checkpoint (truncated?)")
    payload = memoryview(data)[head:]
    if hashlib.sha256(payload).digest() != data[len(CHECKED_MAGIC) : head]:
        raise CorruptFile("SHA-256 mismatch")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """``np.savez`` (uncompressed, loadable without this project) through an atomic rename."""
    buf = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(buf, **named)
    write_bytes(path, buf.getvalue())


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Atomically produce ``path`` with a library writer that takes a file name (e.g. ``savefig``).

    The writer writes a temporary sibling whose name keeps ``path``'s suffix; it is then renamed.
    """
    path = Path(path)
    check_guard(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    try:
        writer(Path(tmp))
        check_guard(path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
