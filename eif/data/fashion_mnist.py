"""Fashion-MNIST from its original IDX files, pooled (train + t10k) and split by class."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import FashionMNIST

from eif.data.base import ArrayImageSet
from eif.data.splits import Splits, class_ids, split_by_class
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
    """A uint8 IDX file (gzipped or not) as an array of ``ndim`` dimensions."""
    path = Path(path)
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
    return body.reshape(dims)


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


def load_fashion_mnist(dcfg: Any) -> Splits:
    """Pool both IDX splits (70,000 images, 28x28 uint8), cap per class, split by class."""
    root = Path(str(dcfg.get("root", "/usr/share/datasets/fashion-mnist")))
    files = find_files(root)
    if files is None and dcfg.get("download", False):
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
        raise EifError(f"fashion_mnist: {images.shape[0]} images but {labels.shape[0]} labels under {root}")
    keep = cap_per_class(labels, dcfg.get("max_per_class"))
    pooled = ArrayImageSet(images[keep], labels[keep])
    names = list(FashionMNIST.classes)
    if labels.max() >= len(names):
        names += [str(c) for c in range(len(names), int(labels.max()) + 1)]
    train_ids = class_ids(dcfg.get("train_classes", list(range(5))), "train_classes")
    test_ids = class_ids(dcfg.get("test_classes", list(range(5, 10))), "test_classes")
    return split_by_class(pooled, names, train_ids, test_ids, "fashion_mnist")
