"""Batched inference: trunk features and head embeddings of a dataset, in eval mode.

Images of different sizes (the reference's uncropped influence transform) are batched by size:
:func:`transformed_sizes` predicts each image's size after the transform from its stored size (a file
header read, no decoding), :func:`equal_size_batches` groups equal sizes into batches, and
:func:`predict` puts every result back at its dataset index. The model sees each image exactly as at
batch size 1 (eval mode: BatchNorm uses its running statistics, the rest works per image), so the
features equal batch-1 features up to float round-off.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from eif.data.base import ArrayImageSet, CroppedFileImageSet, FileImageSet, ImageSet, crop_box
from eif.data.features import FeatureSet
from eif.data.transforms import Geometric, RandomResizedCrop, Resize, ResizeCenterCrop
from eif.models.embedder import Embedder
from eif.utils.errors import EifError

HEADER_READERS = 16  # threads reading image headers (a network file system answers slowly, in parallel)


def _file_size(ds: FileImageSet, i: int) -> tuple[int, int]:
    path = ds.file(i)
    try:
        with Image.open(path) as im:  # reads the header only
            size = im.size
    except FileNotFoundError:
        raise EifError(f"image file missing: {path}") from None
    except OSError as e:
        raise EifError(f"cannot read image {path}: {e}") from None
    if isinstance(ds, CroppedFileImageSet) and ds.boxes[i, 0] >= 0:
        box = crop_box(ds.boxes[i], size)
        if box is not None:  # a box outside the image fails on load, with its own message
            size = (box[2] - box[0], box[3] - box[1])
    return size


def stored_sizes(ds: ImageSet) -> list[tuple[int, int]]:
    """``(w, h)`` of every image as :meth:`ImageSet.load` returns it (crop boxes applied), in pixels;
    from file headers or array shapes, without decoding (other image sets: by loading)."""
    if isinstance(ds, ArrayImageSet):
        h, w = ds.images.shape[1:3]
        return [(int(w), int(h))] * len(ds)
    if isinstance(ds, FeatureSet):  # a feature vector is a 1x1 image
        return [(1, 1)] * len(ds)
    if isinstance(ds, FileImageSet):
        with ThreadPoolExecutor(HEADER_READERS) as pool:
            return list(pool.map(lambda i: _file_size(ds, i), range(len(ds))))
    return [ds.load(i).size for i in range(len(ds))]


def transformed_sizes(geometric: Geometric, sizes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(w, h)`` after the geometric step of a transform, per stored size ``(w, h)``.

    ``resize`` scales the short side to ``resize`` and the long one to ``int(resize * long / short)``
    (torchvision's rule); the cropping steps give a fixed size and ``none`` keeps the size. A wrong
    prediction costs only speed: :func:`predict` splits a batch whose tensors differ in shape.
    """
    if isinstance(geometric, Resize):
        s = geometric.resize
        out = []
        for w, h in sizes:
            short, long = min(w, h), max(w, h)
            new_long = int(s * long / short)
            out.append((s, new_long) if w <= h else (new_long, s))
        return out
    if isinstance(geometric, ResizeCenterCrop):
        return [(geometric.crop, geometric.crop)] * len(sizes)
    if isinstance(geometric, RandomResizedCrop):
        return [(geometric.size, geometric.size)] * len(sizes)
    return list(sizes)


def equal_size_batches(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Dataset indices in batches of at most ``batch_size`` whose ``keys`` (e.g. sizes) are equal.

    Groups come in the order of their first index, indices ascending within a group.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


def _collate_by_shape(items: list[tuple[torch.Tensor, int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(image, label, index)] -> [(images (B, C, H, W), indices (B,))]``, one entry per image shape."""
    by_shape: dict[tuple[int, ...], list[tuple[torch.Tensor, int]]] = {}
    for x, _, i in items:
        by_shape.setdefault(tuple(x.shape), []).append((x, i))
    return [
        (torch.stack([x for x, _ in group]), torch.tensor([i for _, i in group], dtype=torch.int64))
        for group in by_shape.values()
    ]


@torch.no_grad()
def predict(
    model: Embedder,
    dataset: ImageSet,
    batch_size: int,
    device: torch.device,
    desc: str = "embed",
    amp: bool = False,
    progress: bool = False,
    sizes: Sequence[Hashable] | None = None,
    num_workers: int = 0,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (features (N, D), embeddings (N, E)) as float32 arrays, in dataset order.

    ``sizes``: one key per item (e.g. its size after the transform, :func:`transformed_sizes`); items
    are then batched with equal keys (:func:`equal_size_batches`), so variable-size images are batched
    too. Without it, consecutive items form a batch (their tensors must have one shape).
    ``num_workers``: DataLoader worker processes (0 = load in this process). ``amp`` (autocast of the
    trunk to float16) and ``channels_last`` apply on CUDA only; on other devices they change nothing.
    Embeddings are ``head(features)`` in float32, not normalised.
    """
    model.eval()
    d, e = model.head.in_features, model.head.out_features
    n = len(dataset)
    feats = np.zeros((n, d), np.float32)
    embs = np.zeros((n, e), np.float32)
    cuda = device.type == "cuda"
    loader_args: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": cuda,
        "collate_fn": _collate_by_shape,
    }
    if sizes is None:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, **loader_args)
    else:
        if len(sizes) != n:
            raise ValueError(f"sizes has {len(sizes)} entries for {n} items")
        loader = DataLoader(dataset, batch_sampler=equal_size_batches(sizes, batch_size), **loader_args)
    memory_format = torch.channels_last if cuda and channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    autocast = torch.autocast("cuda", dtype=torch.float16) if cuda and amp else nullcontext()
    try:
        for groups in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not progress):
            for x, idx in groups:
                x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                with autocast:
                    f = model.features(x)
                f = f.float()
                feats[idx.numpy()] = f.cpu().numpy()
                embs[idx.numpy()] = model.head(f).cpu().numpy()
    finally:
        model.to(memory_format=torch.contiguous_format)
    return feats, embs
