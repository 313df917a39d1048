"""Retrieval metrics on raw (unnormalised) embeddings: Recall@K, NMI and MAP@R.

As in the reference code, Recall@K and the k-means of NMI use the Euclidean distance on the raw model
outputs; a sample is never its own neighbour. MAP@R defaults to the same Euclidean distance so that all
metrics rank neighbours alike; ``map_metric="inner_product"`` reproduces the reference's MAP@R
(faiss ``IndexFlatIP`` on unnormalised embeddings). Neighbour search goes through faiss
(:mod:`eif.evaluation.knn`), so no N x N matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from eif.evaluation.knn import as_float32, kmeans, knn
from eif.utils.errors import EifError, require

ArrayLike = np.ndarray | torch.Tensor


def _labels(y: ArrayLike, n: int) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    require(y.shape == (n,), f"labels must have shape ({n},), got {y.shape}")
    return y.astype(np.int64)


def _recall_from_hits(hits: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """hits (N, k_max) bool -> {k: fraction of rows with a hit among the first k}."""
    first_hit = np.where(hits.any(1), hits.argmax(1), hits.shape[1])
    return {int(k): float(np.mean(first_hit < k)) for k in ks}


def recall_at_k(emb: ArrayLike, labels: ArrayLike, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K within one set, each sample querying all others: {K: share with a same-label hit in top K}."""
    x = as_float32(emb)
    y = _labels(labels, x.shape[0])
    _, idx = knn(x, None, max(ks))
    return _recall_from_hits(y[idx] == y[:, None], ks)


def recall_at_k_query_gallery(
    query: ArrayLike,
    query_labels: ArrayLike,
    gallery: ArrayLike,
    gallery_labels: ArrayLike,
    ks: Sequence[int],
) -> dict[int, float]:
    """Recall@K of queries against a separate gallery (InShop)."""
    q, g = as_float32(query), as_float32(gallery)
    yq, yg = _labels(query_labels, q.shape[0]), _labels(gallery_labels, g.shape[0])
    _, idx = knn(q, g, max(ks))
    return _recall_from_hits(yg[idx] == yq[:, None], ks)


def nmi(emb: ArrayLike, labels: ArrayLike, seed: int = 0) -> float:
    """NMI (geometric mean normalisation) between labels and faiss k-means with k = number of labels."""
    x = as_float32(emb)
    y = _labels(labels, x.shape[0])
    clusters = kmeans(x, len(np.unique(y)), seed=seed)
    return float(normalized_mutual_info_score(y, clusters, average_method="geometric"))


def map_at_r(
    emb: ArrayLike,
    labels: ArrayLike,
    reference: ArrayLike | None = None,
    reference_labels: ArrayLike | None = None,
    metric: str = "euclidean",
) -> float:
    """MAP@R (Musgrave et al. 2020): mean over queries of (1/R) sum_{i<=R} P@i * rel_i.

    R is the number of reference samples sharing the query's label (the query itself excluded when
    ``reference`` is None). Queries with R = 0 are skipped, as in pytorch-metric-learning.
    ``metric``: ``euclidean`` (default, consistent with Recall@K) or ``inner_product`` (the reference).
    """
    q = as_float32(emb)
    yq = _labels(labels, q.shape[0])
    self_search = reference is None
    if self_search:
        ref, yr = q, yq
    else:
        if reference_labels is None:
            raise EifError("map_at_r needs reference_labels with a reference set")
        ref = as_float32(reference)
        yr = _labels(reference_labels, ref.shape[0])
    classes, counts = np.unique(yr, return_counts=True)
    pos = np.clip(np.searchsorted(classes, yq), 0, len(classes) - 1)
    r = np.where(classes[pos] == yq, counts[pos], 0) - int(self_search)
    keep = r > 0
    require(bool(keep.any()), "map_at_r: no query has a same-label sample in the reference set")
    exclude = np.flatnonzero(keep) if self_search else None
    _, idx = knn(q[keep], ref, int(r[keep].max()), metric=metric, exclude=exclude)
    yq, r = yq[keep], r[keep]
    rel = (yr[idx] == yq[:, None]) & (np.arange(idx.shape[1]) < r[:, None])
    precision = np.cumsum(rel, axis=1) / np.arange(1, idx.shape[1] + 1)
    return float(np.mean((precision * rel).sum(1) / r))


def evaluate_embeddings(
    emb: ArrayLike,
    labels: ArrayLike,
    ks: Sequence[int],
    with_nmi: bool = True,
    with_map_at_r: bool = True,
    map_metric: str = "euclidean",
    seed: int = 0,
) -> dict[str, float]:
    """Recall@K (``recall@K`` keys), ``nmi`` and ``map@r`` of one retrieval set (CUB, Cars)."""
    out = {f"recall@{k}": v for k, v in recall_at_k(emb, labels, ks).items()}
    if with_nmi:
        out["nmi"] = nmi(emb, labels, seed=seed)
    if with_map_at_r:
        out["map@r"] = map_at_r(emb, labels, metric=map_metric)
    return out


def evaluate_query_gallery(
    query: ArrayLike,
    query_labels: ArrayLike,
    gallery: ArrayLike,
    gallery_labels: ArrayLike,
    ks: Sequence[int],
    with_nmi: bool = True,
    with_map_at_r: bool = True,
    map_metric: str = "euclidean",
    seed: int = 0,
) -> dict[str, float]:
    """Query -> gallery Recall@K and MAP@R (InShop); NMI over query + gallery pooled, as the reference."""
    out = {
        f"recall@{k}": v
        for k, v in recall_at_k_query_gallery(query, query_labels, gallery, gallery_labels, ks).items()
    }
    if with_nmi:
        pooled = np.concatenate([as_float32(query), as_float32(gallery)])
        pooled_labels = np.concatenate(
            [_labels(query_labels, len(query)), _labels(gallery_labels, len(gallery))]
        )
        out["nmi"] = nmi(pooled, pooled_labels, seed=seed)
    if with_map_at_r:
        out["map@r"] = map_at_r(query, query_labels, gallery, gallery_labels, metric=map_metric)
    return out
