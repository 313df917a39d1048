"""Fashion-MNIST from its original IDX files, pooled (train + t10k) and split by class."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import PositiveInt
from torchvision.datasets import FashionMNIST

from eif.data.base import ArrayImageSet
from eif.data.config import ClassIds, DatasetConfig, class_ids
from eif.data.splits import Splits, split_by_class
from eif.settings import LOCATION, setting
from eif.utils.errors import EifError

# magic = 0x0000 0x08 (uint8) <ndim>: 2051 for (N, H, W) images, 2049 for (N,) labels.
IDX_MAGIC = {3: 2051, 1: 2049}
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
LAYOUT = (
    "the four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte (each optionally .gz) in root or root/FashionMNIST/raw"
)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """A uint8 IDX file (gzipped or not) as a read-only array of ``ndim`` dimensions.

    Decoded once per process and file version (path, size, mtime): a job builds its data once, but
    tests and sweeps in one process read the same files many times."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise EifError(f"cannot read IDX file {path}: {e}") from None
    return _read_idx(str(path), ndim, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _read_idx(name: str, ndim: int, size: int, mtime_ns: int) -> np.ndarray:
    path = Path(name)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise EifError(f"cannot read IDX file {path}: {e}") from None
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    if magic != IDX_MAGIC[ndim]:
        raise EifError(
            f"{path} is not a uint8 IDX file with {ndim} dimensions "
            f"(magic {magic}, expected {IDX_MAGIC[ndim]})"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise EifError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, found {body.size}")
    out = body.reshape(dims)
    out.flags.writeable = False
    return out


def find_files(root: Path) -> dict[str, Path] | None:
    """The four IDX files under ``root`` or ``root/FashionMNIST/raw`` (raw preferred over .gz)."""
    for base in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for name in FILES:
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


def _download(root: Path) -> None:
    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as e:  # urllib/HTTP/checksum errors all mean the same thing to the user
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise EifError(
            f"fashion_mnist: download into {root / 'FashionMNIST' / 'raw'} failed ({reason}); "
            f"without internet put {LAYOUT}"
        ) from None


def cap_per_class(labels: np.ndarray, cap: int | None) -> np.ndarray:
    """Ascending indices keeping the first ``cap`` samples of every class (all when ``cap`` is None)."""
    if cap is None:
        return np.arange(labels.shape[0])
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    rank = np.arange(labels.shape[0]) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return np.sort(order[rank < int(cap)])


class FashionMnist(DatasetConfig):
    """Fashion-MNIST from its IDX files: both official files pooled (70,000 28x28 grayscale images),
    at most ``max_per_class`` per class (first in file order; None = all), split by class ids."""

    root: str = setting("/usr/share/datasets/fashion-mnist", unkeyed=LOCATION)
    # Download through torchvision into `root` when the files are missing (needs internet).
    download: bool = setting(False, unkeyed=LOCATION)
    train_classes: ClassIds = (0, 1, 2, 3, 4)
    test_classes: ClassIds = (5, 6, 7, 8, 9)
    max_per_class: PositiveInt | None = 1000

    def load(self) -> Splits:
        root = Path(self.root)
        files = find_files(root)
        if files is None and self.download:
            _download(root)
            files = find_files(root)
        if files is None:
            raise EifError(
                f"fashion_mnist: data not found under {root}; expected {LAYOUT} "
                "(Debian: apt install dataset-fashion-mnist; or set dataset.download=true)"
            )
        images = np.concatenate([read_idx(files[FILES[0]], 3), read_idx(files[FILES[2]], 3)])
        labels = np.concatenate([read_idx(files[FILES[1]], 1), read_idx(files[FILES[3]], 1)]).astype(np.int64)
        if images.shape[0] != labels.shape[0]:
            raise EifError(
                f"fashion_mnist: {images.shape[0]} images but {labels.shape[0]} labels under {root}"
            )
        keep = cap_per_class(labels, self.max_per_class)
        pooled = ArrayImageSet(images[keep], labels[keep])
        names = list(FashionMNIST.classes)
        if labels.max() >= len(names):
            names += [str(c) for c in range(len(names), int(labels.max()) + 1)]
        return split_by_class(
            pooled, names, class_ids(self.train_classes), class_ids(self.test_classes), "fashion_mnist"
        )
