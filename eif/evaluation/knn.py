"""Exact k-nearest neighbours and k-means with faiss: on the job's GPU when faiss and torch both see
one, else on the CPU.

The GPU path never fails where the CPU path works: a search whose k exceeds faiss GPU's selection limit
(:data:`FAISS_GPU_MAX_K`) runs on a CPU index, and a GPU error (out of memory, a driver problem) is
logged once per call and the work is redone on the CPU. Both paths are exact flat indexes, so they
return the same neighbours (up to float round-off in the distances). The GPU is the job's device:
:func:`set_device` pins ``cuda:N`` to GPU N and ``cpu`` to the CPU; without it, torch's current CUDA
device is used.

Embeddings must be finite: a NaN or infinite value (a diverged model) is refused with one line before
faiss sees it, and an error faiss raises on the CPU becomes one line too (:class:`EifError`).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np
import torch

from eif.utils.errors import EifError, require

log = logging.getLogger(__name__)

QUERY_CHUNK = 8192  # query rows per faiss search call: bounds the (chunk, k) result and GPU scratch memory
FAISS_GPU_MAX_K = 2048  # faiss GPU flat indexes return at most this many neighbours per query

_device: torch.device | None = None  # set_device(); None = torch's current CUDA device when there is one


def import_faiss() -> ModuleType:
    """The faiss module, or an :class:`EifError` that says how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise EifError(
            "faiss is not importable: pip install 'eif[cpu]' (faiss-cpu), or a GPU build with "
            "EIF_EXTRAS=gpu,dev bash scripts/setup.sh (docs/gpu.md)"
        ) from exc
    return faiss


def use_gpu() -> bool:
    """True when faiss was built with GPU support, sees a GPU, and torch CUDA is available."""
    faiss = import_faiss()
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return num_gpus > 0 and torch.cuda.is_available()


def set_device(device: torch.device | str | None) -> None:
    """Pin faiss to the job's device: ``cuda:N`` searches on GPU N, ``cuda`` on torch's current CUDA
    device, ``cpu`` on the CPU; ``None`` restores the default (a GPU when one is usable)."""
    global _device
    _device = None if device is None else torch.device(device)


def gpu_device() -> int | None:
    """The GPU index faiss works on, or None for the CPU (``set_device("cpu")``, or no usable GPU)."""
    if (_device is not None and _device.type != "cuda") or not use_gpu():
        return None
    if _device is not None and _device.index is not None:
        return _device.index
    return torch.cuda.current_device()


def as_float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 (N, E) numpy copy/view of embeddings, as faiss needs."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        x = np.ascontiguousarray(x, dtype=np.float32)
    require(x.ndim == 2, f"embeddings must have shape (N, E), got {x.shape}")
    bad = int(np.count_nonzero(~np.isfinite(x)))  # after the cast: float64 beyond 3.4e38 becomes inf
    if bad:
        rows = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
        raise EifError(
            f"{rows} of {x.shape[0]} embeddings hold {bad} NaN or infinite values (as float32): the model "
            "diverged or its inputs overflow; re-train with lower learning rates or rescaled inputs"
        )
    huge = int(np.count_nonzero(~np.isfinite(np.einsum("ij,ij->i", x, x))))
    if huge:  # finite values whose squared norm overflows float32: every distance to them is inf
        raise EifError(
            f"{huge} of {x.shape[0]} embeddings are too large for float32 distances (squared norm beyond "
            f"3.4e38, largest |value| {float(np.abs(x).max()):.3g}): the model diverged; re-train with "
            "lower learning rates or rescaled inputs"
        )
    return x


def _faiss_error(err: Exception, what: str) -> EifError:
    """One line for an error faiss raised on the CPU (faiss turns C++ exceptions into RuntimeError)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return EifError(f"faiss failed during {what}: {' '.join(first.split())[:300]}")


def flat_index(dim: int, metric: str = "euclidean", gpu: bool | int | None = None) -> Any:
    """An exact faiss index: ``euclidean`` (squared L2 scores) or ``inner_product``.

    ``gpu``: None or True = on :func:`gpu_device` (the CPU when it is None), False = on the CPU, an int
    = on that GPU.
    """
    faiss = import_faiss()
    require(
        metric in ("euclidean", "inner_product"), f"metric must be euclidean or inner_product, got {metric!r}"
    )
    device = gpu_device() if gpu is None or gpu is True else (None if gpu is False else int(gpu))
    if device is None:
        return faiss.IndexFlatL2(dim) if metric == "euclidean" else faiss.IndexFlatIP(dim)
    res = faiss.StandardGpuResources()
    config = faiss.GpuIndexFlatConfig()
    config.device = device
    kind = faiss.GpuIndexFlatL2 if metric == "euclidean" else faiss.GpuIndexFlatIP
    index = kind(res, dim, config)
    # The C++ index only points at its resources; faiss's own attribute keeps them alive with it.
    index.referenced_objects = [*getattr(index, "referenced_objects", []), res]
    return index


def _search(
    index: Any, q: np.ndarray, k: int, metric: str, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Chunked search of ``index``; drops each query's excluded index (see :func:`knn`)."""
    k_search = k + int(exclude is not None)
    scores = np.empty((q.shape[0], k), np.float32)
    indices = np.empty((q.shape[0], k), np.int64)
    for start in range(0, q.shape[0], QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, q.shape[0])
        s, i = index.search(q[start:stop], k_search)
        if exclude is not None:
            drop = i == np.asarray(exclude[start:stop])[:, None]
            # A row whose excluded index is not among its k+1 results (e.g. more than k exact
            # duplicates) drops its last result; a stable sort moves the dropped entry to the end.
            drop[~drop.any(1), -1] = True
            keep = np.argsort(drop, axis=1, kind="stable")[:, :k]
            s, i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
        if metric == "euclidean":
            s = np.sqrt(np.maximum(s, 0))  # faiss returns squared L2, slightly negative from round-off
        scores[start:stop], indices[start:stop] = s, i
    return scores, indices


def _gpu_failed(err: Exception, gpu: int, what: str) -> None:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    log.warning("faiss on GPU %d failed during %s (%s); redoing it on the CPU", gpu, what, first)


def knn(
    query: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor | None,
    k: int,
    metric: str = "euclidean",
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``reference`` for each row of ``query``, best first.

    ``reference=None`` searches ``query`` against itself and excludes each row's own index.
    ``exclude`` (Nq,) int: a reference index to leave out per query (-1 for none); exclusion is by
    index, not by rank position, so exact duplicates of a query are still returned as neighbours.
    Returns ``scores`` float32 (Nq, k): Euclidean distances (not squared; ascending) for ``euclidean``,
    inner products (descending) for ``inner_product``; and ``indices`` int64 (Nq, k) into ``reference``.
    On a GPU when one is usable and k (+1 with exclusion) is within :data:`FAISS_GPU_MAX_K`, else on
    the CPU; the neighbours are the same either way.
    """
    q = as_float32(query)
    r = q if reference is None else as_float32(reference)
    if reference is None:
        exclude = np.arange(q.shape[0])
    require(q.shape[1] == r.shape[1], f"query and reference dims differ: {q.shape[1]} vs {r.shape[1]}")
    require(exclude is None or np.shape(exclude) == (q.shape[0],), "exclude must have one index per query")
    n_ref = r.shape[0] - int(exclude is not None)
    require(1 <= k <= n_ref, f"k must be in [1, {n_ref}] (reference size), got {k}")
    gpu = gpu_device()
    if gpu is not None and k + int(exclude is not None) > FAISS_GPU_MAX_K:
        gpu = None  # beyond faiss GPU's selection limit: the CPU index has none
    if gpu is not None:
        try:
            index = flat_index(q.shape[1], metric, gpu)
            index.add(r)
            return _search(index, q, k, metric, exclude)
        except RuntimeError as err:  # faiss turns C++ and CUDA errors into RuntimeError
            _gpu_failed(err, gpu, f"a k={k} search")
    try:
        index = flat_index(q.shape[1], metric, False)
        index.add(r)
        return _search(index, q, k, metric, exclude)
    except RuntimeError as err:
        raise _faiss_error(err, f"a k={k} search") from None


def kmeans(x: np.ndarray | torch.Tensor, k: int, seed: int = 0, niter: int = 25) -> np.ndarray:
    """Cluster rows of x (N, E) with faiss k-means (Euclidean); returns cluster ids int64 (N,).

    The assignment index lives on :func:`gpu_device` (one GPU, the job's), else on the CPU.
    """
    faiss = import_faiss()
    x = as_float32(x)
    require(1 <= k <= x.shape[0], f"k-means needs 1 <= k <= N={x.shape[0]}, got k={k}")
    gpu = gpu_device()
    if gpu is not None:
        try:
            return _kmeans(faiss, x, k, seed, niter, gpu)
        except RuntimeError as err:
            _gpu_failed(err, gpu, f"k-means with k={k}")
    try:
        return _kmeans(faiss, x, k, seed, niter, None)
    except RuntimeError as err:
        raise _faiss_error(err, f"k-means with k={k}") from None


def _kmeans(faiss: ModuleType, x: np.ndarray, k: int, seed: int, niter: int, gpu: int | None) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], int(k), niter=int(niter), seed=int(seed), gpu=False, verbose=False)
    if gpu is not None:
        km.index = flat_index(x.shape[1], "euclidean", gpu)  # faiss's own gpu= option spans all GPUs
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)
