"""The identity of the data a job reads, and a check of every image before any compute.

A split's fingerprint hashes what training or evaluation actually sees: the image bytes (for files:
each file's relative path and content hash, plus the crop boxes of a :class:`CroppedFileImageSet`;
for in-memory images: the array; for precomputed features: the vectors and their paths), the clean
labels and the class names. Store keys include it in place of ``dataset.root``, so the same data
under another path reuses results, and a changed file, label, crop box or class split recomputes.
Feature vectors are not images: they skip the image checks.

Hashing and decoding every image of a large data set takes minutes, so per-file results (content
hash, PIL mode, size, or why the file cannot be used) are cached per data set root in
``<cache_dir>/data_index/``, keyed by the file's (size, mtime, inode, ctime): a later job re-reads
only files that changed, and costs one ``stat`` per file otherwise. The ctime is part of the key (as in
git's index) because a program can restore a rewritten file's mtime (``os.utime``, ``touch -r``,
``rsync -t``) but not its ctime, which every write and every ``utime`` set to the current time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from eif.data.base import ArrayImageSet, CroppedFileImageSet, DataBundle, FileImageSet, ImageSet, crop_box
from eif.data.features import FeatureSet
from eif.utils.io import read_json, write_json

log = logging.getLogger(__name__)

# Channels ToTensor gives for a PIL mode; modes not listed (P, PA, LA, CMYK, ...) need to_rgb.
MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "F": 1, "RGB": 3}


@dataclass(frozen=True)
class FileInfo:
    """What one image file is: ``digest`` of its bytes, PIL ``mode`` and ``size`` (w, h), or ``error``."""

    stat: tuple[int, ...]  # size, mtime_ns, inode, ctime_ns
    digest: str
    mode: str
    size: tuple[int, int]
    error: str = ""


def _stat(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def inspect_file(path: Path) -> FileInfo:
    """Read ``path`` once: hash its bytes and decode it fully (a truncated JPEG fails here, not later)."""
    st = _stat(path)
    if st is None:
        return FileInfo((0, 0, 0, 0), "", "", (0, 0), "missing")
    try:
        data = path.read_bytes()
    except OSError as e:
        return FileInfo(st, "", "", (0, 0), f"unreadable ({e.strerror or e})")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return FileInfo(st, digest, im.mode, im.size)
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... for bad files
        return FileInfo(st, digest, "", (0, 0), f"cannot decode ({' '.join(str(e).split())[:80]})")


class FileIndex:
    """The per-root cache of :class:`FileInfo` (see the module doc); ``cache_dir`` None keeps nothing."""

    def __init__(self, root: Path, cache_dir: Path | None) -> None:
        self.root = Path(root).resolve()
        name = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        self.path = None if cache_dir is None else Path(cache_dir) / "data_index" / f"{name}.json"
        self.files: dict[str, FileInfo] = {}
        if self.path is not None and self.path.is_file():
            try:
                raw = read_json(self.path)
                self.files = {
                    k: FileInfo(tuple(v[0]), v[1], v[2], tuple(v[3]), v[4]) for k, v in raw["files"].items()
                }
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                log.warning("ignoring unreadable data index %s", self.path)

    def lookup(self, rel_paths: Sequence[str], workers: int = 8, progress: bool = False) -> list[FileInfo]:
        """The info of every path (relative to the root), inspecting only new or changed files."""
        stale = sorted(
            {r for r in rel_paths if (info := self.files.get(r)) is None or info.stat != _stat(self.root / r)}
        )
        if stale:
            from tqdm.auto import tqdm

            with ThreadPoolExecutor(max(1, min(workers, len(stale)))) as pool:  # PIL decodes without the GIL
                infos = pool.map(inspect_file, (self.root / r for r in stale), chunksize=64)
                for rel, info in tqdm(
                    zip(stale, infos),
                    total=len(stale),
                    desc=f"checking images in {self.root}",
                    disable=not progress,
                ):
                    self.files[rel] = info
            self._save()
        return [self.files[r] for r in rel_paths]

    def _save(self) -> None:
        if self.path is None:
            return
        raw = {
            k: [list(v.stat), v.digest, v.mode, list(v.size), v.error] for k, v in sorted(self.files.items())
        }
        try:
            write_json(self.path, {"root": str(self.root), "files": raw})
        except OSError as e:  # a cache that cannot be written costs time next run, not correctness
            log.warning("cannot write the data index %s (%s)", self.path, e.strerror or e)


def _hash_labels(h: hashlib.blake2b, images: ImageSet, class_names: Sequence[str]) -> None:
    h.update(np.ascontiguousarray(images.clean_labels, dtype=np.int64).tobytes())
    h.update(json.dumps(list(class_names)).encode())


def fingerprint(images: ImageSet, class_names: Sequence[str], infos: Sequence[FileInfo] | None = None) -> str:
    """The split's identity: image content (and crop boxes), clean labels and class names (32 hex digits).

    ``infos``: the :class:`FileInfo` of every image of a :class:`FileImageSet`, in order."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(images, ArrayImageSet):
        h.update(repr(images.images.shape).encode())
        h.update(np.ascontiguousarray(images.images).tobytes())
    elif isinstance(images, FeatureSet):  # precomputed vectors: their values and what they came from
        h.update(repr(images.features.shape).encode())
        h.update(images.features.tobytes())
        h.update(json.dumps(images.paths).encode())
    elif isinstance(images, FileImageSet):
        if infos is None:
            raise ValueError("a file image set needs its file infos to be fingerprinted")
        for rel, info in zip(images.paths, infos):
            h.update(f"{rel}\0{info.digest}\n".encode())
        if isinstance(images, CroppedFileImageSet):
            h.update(images.boxes.tobytes())
    else:
        raise TypeError(f"cannot fingerprint {type(images).__name__}")
    _hash_labels(h, images, class_names)
    return h.hexdigest()


@dataclass
class DataCheck:
    """Fingerprints of every split of a bundle, the problems found in its images, and the images
    whose content repeats (``duplicates``: one description per repeated image, see
    :func:`content_duplicates`)."""

    fingerprints: dict[str, str]
    problems: list[str]
    modes: dict[str, int]
    duplicates: list[str] = field(default_factory=list)


def content_ids(images: ImageSet, infos: Sequence[FileInfo] | None = None) -> list[str]:
    """A content hash per sample: the file's digest (and crop box), the array image's or the feature
    vector's bytes. Equal ids mean the model sees the very same input."""
    if isinstance(images, FileImageSet):
        if infos is None:
            raise ValueError("a file image set needs its file infos")
        if isinstance(images, CroppedFileImageSet):
            return [f"{info.digest}:{box}" for info, box in zip(infos, images.boxes.tolist())]
        return [info.digest for info in infos]
    rows = images.images if isinstance(images, ArrayImageSet) else getattr(images, "features", None)
    if rows is None:
        raise TypeError(f"cannot hash the samples of {type(images).__name__}")
    return [hashlib.blake2b(np.ascontiguousarray(r).tobytes(), digest_size=16).hexdigest() for r in rows]


def content_duplicates(train: list[str], test: list[str]) -> list[str]:
    """Descriptions of the samples whose content id repeats within train, within test, or between
    them (``train[i]`` / ``test[j]`` name them by split and index), first occurrence first."""
    seen: dict[str, str] = {}
    out: list[str] = []
    for split, ids in (("train", train), ("test", test)):
        for i, cid in enumerate(ids):
            where = f"{split}[{i}]"
            if cid in seen:
                out.append(f"{where} = {seen[cid]}")
            else:
                seen[cid] = where
    return out


def repeated_files(train: FileImageSet, test: FileImageSet) -> list[str]:
    """Problems for image files (and crop boxes) listed more than once in train and test together."""

    def ident(images: FileImageSet) -> list[str]:
        paths = [os.path.normpath(images.root / p) for p in images.paths]
        if isinstance(images, CroppedFileImageSet):
            return [f"{p}:{box}" for p, box in zip(paths, images.boxes.tolist())]
        return paths

    seen: dict[str, str] = {}
    out: list[str] = []
    for split, images in (("train", train), ("test", test)):
        for rel, cid in zip(images.paths, ident(images)):
            if cid in seen:
                out.append(f"{rel} (listed again in {split}, first in {seen[cid]})")
            else:
                seen[cid] = split
    return out


def check_bundle(
    bundle: DataBundle, cache_dir: Path | None, channels: int | None, to_rgb: bool, progress: bool = False
) -> DataCheck:
    """Fingerprint every split and list images that cannot be used with ``channels`` model input channels.

    A file that is missing or does not decode is a problem; without ``to_rgb`` so is a mode whose
    channel count is not ``channels`` (RGBA, palette, CMYK, ...), and so is a crop box outside its image."""
    splits = {"train": bundle.train, "test": bundle.test, "query": bundle.query, "gallery": bundle.gallery}
    names = {"train": bundle.train_class_names}
    fps: dict[str, str] = {}
    problems: list[str] = []
    modes: dict[str, int] = {}
    indexes: dict[Path, FileIndex] = {}
    ids: dict[str, list[str]] = {}
    for split, images in splits.items():
        if images is None:
            continue
        class_names = names.get(split, bundle.test_class_names)
        if isinstance(images, FileImageSet):
            index = indexes.setdefault(images.root, FileIndex(images.root, cache_dir))
            infos = index.lookup(images.paths, progress=progress)
            fps[split] = fingerprint(images, class_names, infos)
            if split in ("query", "gallery"):
                continue  # the pooled test split holds the same files
            ids[split] = content_ids(images, infos)
            boxes = images.boxes if isinstance(images, CroppedFileImageSet) else None
            for k, (rel, info) in enumerate(zip(images.paths, infos)):
                if info.error:
                    problems.append(f"{rel} ({info.error})")
                    continue
                if boxes is not None and boxes[k, 0] >= 0 and crop_box(boxes[k], info.size) is None:
                    w, h = info.size
                    problems.append(
                        f"{rel} (bounding box {tuple(boxes[k].tolist())} outside the {w}x{h} image)"
                    )
                modes[info.mode] = modes.get(info.mode, 0) + 1
                have = MODE_CHANNELS.get(info.mode)
                if not to_rgb and have != channels:
                    what = (
                        f"{have} channel{'s' if have != 1 else ''}" if have else "not a plain L or RGB image"
                    )
                    problems.append(f"{rel} (mode {info.mode}: {what}, the model takes {channels})")
        else:
            fps[split] = fingerprint(images, class_names)
            if split not in ("query", "gallery"):
                ids[split] = content_ids(images)
            if isinstance(images, ArrayImageSet):
                mode = "L" if images.images.ndim == 3 else "RGB"
                modes[mode] = modes.get(mode, 0) + len(images)
                if not to_rgb and MODE_CHANNELS[mode] != channels:
                    problems.append(
                        f"all {len(images)} {split} images (mode {mode}, the model takes {channels})"
                    )
    if isinstance(bundle.train, FileImageSet) and isinstance(bundle.test, FileImageSet):
        problems += repeated_files(bundle.train, bundle.test)
    duplicates = content_duplicates(ids["train"], ids["test"])
    if duplicates:
        n = len(duplicates)
        log.warning(
            "%d sample%s repeat%s the content of an earlier one (%s%s): an exact copy in the test split is "
            "its own nearest neighbour and inflates Recall@K; one in train and test is a test sample seen "
            "in training",
            n,
            "s" if n > 1 else "",
            "" if n > 1 else "s",
            "; ".join(duplicates[:3]),
            "; ..." if n > 3 else "",
        )
    return DataCheck(fps, problems, modes, duplicates)


def file_digest(path: str | os.PathLike, cache_dir: Path | None) -> str:
    """The content hash of one file (e.g. a checkpoint to start from), cached like the images."""
    p = Path(path).resolve()
    info = FileIndex(p.parent, cache_dir).lookup([p.name])[0]
    return info.digest
