"""Exact k-nearest neighbours and k-means with faiss (GPU when faiss and torch both see one, else CPU)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

from eif.utils.errors import EifError, require

QUERY_CHUNK = 8192  # query rows per faiss search call: bounds the (chunk, k) result and GPU scratch memory
FAISS_GPU_MAX_K = 2048  # faiss GPU flat indexes return at most this many neighbours


def import_faiss() -> ModuleType:
    """The faiss module, or an :class:`EifError` that says how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise EifError(
            "faiss is not importable: pip install 'eif[cpu]' (faiss-cpu) or 'eif[gpu]' (faiss-gpu)"
        ) from exc
    return faiss


def use_gpu() -> bool:
    """True when faiss was built with GPU support, sees a GPU, and torch CUDA is available."""
    faiss = import_faiss()
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return num_gpus > 0 and torch.cuda.is_available()


def as_float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 (N, E) numpy copy/view of embeddings, as faiss needs."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    require(x.ndim == 2, f"embeddings must have shape (N, E), got {x.shape}")
    return x


def flat_index(dim: int, metric: str = "euclidean", gpu: bool | None = None) -> object:
    """An exact faiss index: ``euclidean`` (squared L2 scores) or ``inner_product``; on GPU if available."""
    faiss = import_faiss()
    require(
        metric in ("euclidean", "inner_product"), f"metric must be euclidean or inner_product, got {metric!r}"
    )
    gpu = use_gpu() if gpu is None else gpu
    if gpu:
        res = faiss.StandardGpuResources()
        return faiss.GpuIndexFlatL2(res, dim) if metric == "euclidean" else faiss.GpuIndexFlatIP(res, dim)
    return faiss.IndexFlatL2(dim) if metric == "euclidean" else faiss.IndexFlatIP(dim)


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
    """
    q = as_float32(query)
    r = q if reference is None else as_float32(reference)
    if reference is None:
        exclude = np.arange(q.shape[0])
    require(q.shape[1] == r.shape[1], f"query and reference dims differ: {q.shape[1]} vs {r.shape[1]}")
    require(exclude is None or np.shape(exclude) == (q.shape[0],), "exclude must have one index per query")
    n_ref = r.shape[0] - int(exclude is not None)
    require(1 <= k <= n_ref, f"k must be in [1, {n_ref}] (reference size), got {k}")
    gpu = use_gpu()
    k_search = k + int(exclude is not None)
    require(not gpu or k_search <= FAISS_GPU_MAX_K, f"faiss GPU search supports k <= {FAISS_GPU_MAX_K - 1}")
    index = flat_index(q.shape[1], metric, gpu)
    index.add(r)
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


def kmeans(x: np.ndarray | torch.Tensor, k: int, seed: int = 0, niter: int = 25) -> np.ndarray:
    """Cluster rows of x (N, E) with faiss k-means (Euclidean); returns cluster ids int64 (N,)."""
    faiss = import_faiss()
    x = as_float32(x)
    require(1 <= k <= x.shape[0], f"k-means needs 1 <= k <= N={x.shape[0]}, got k={k}")
    km = faiss.Kmeans(x.shape[1], int(k), niter=int(niter), seed=int(seed), gpu=use_gpu(), verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)
