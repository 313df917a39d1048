"""Weighted kNN label recommendation: the paper's Algorithm 1 with the reference's semantics
(docs/protocol.md, "Mislabel detection, relabelling, field study").

Distances are Euclidean (not squared) on the raw, unnormalised training embeddings; each point's
own entry is excluded; ``k`` is the lower median of the per-class counts of the (noisy) training
labels; every neighbour votes for its label with weight ``exp(-d)``; the votes are normalised to sum
to 1 over the ``C`` training classes and the recommendation is the argmax (the current label can
win). faiss does the search (:mod:`eif.evaluation.knn`), so nothing of size N x N is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eif.evaluation.knn import knn
from eif.utils.errors import require


def lower_median_class_count(labels: np.ndarray) -> int:
    """The lower middle value of the per-class sample counts (``torch.median`` semantics).

    Only classes that occur in ``labels`` count, as in the reference (``unique(return_counts)``).
    """
    counts = np.sort(np.unique(np.asarray(labels), return_counts=True)[1])
    require(counts.size > 0, "cannot pick k for the weighted kNN: no training labels")
    return int(counts[(counts.size - 1) // 2])


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest training points of each query, self excluded.

    ``indices``: int64 (Q, k) into the training set, nearest first; ``distances``: float64 (Q, k),
    Euclidean (not squared), ascending.
    """

    indices: np.ndarray
    distances: np.ndarray


def train_neighbours(embeddings: np.ndarray, k: int, queries: np.ndarray | None = None) -> Neighbours:
    """Exact (flat L2) kNN of training points ``queries`` among all training ``embeddings`` (N, E).

    ``queries``: int indices into ``embeddings`` (default: all). Each query's own index is removed
    by identity, not by position, so exact duplicates of a point still count as its neighbours; when
    ties pushed it out of the k+1 results, the farthest one is dropped. The search is
    :func:`eif.evaluation.knn.knn` (the job's GPU when usable, the CPU beyond faiss GPU's k limit).
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = emb.shape[0]
    require(1 <= k < n, f"weighted kNN needs 1 <= k < N_train, got k={k}, N={n}")
    q_idx = np.arange(n, dtype=np.int64) if queries is None else np.asarray(queries, dtype=np.int64)
    if q_idx.size == 0:
        return Neighbours(np.zeros((0, k), np.int64), np.zeros((0, k), np.float64))
    dist, ids = knn(emb[q_idx], emb, k, exclude=q_idx)
    return Neighbours(ids.astype(np.int64), dist.astype(np.float64))


def weighted_votes(nbrs: Neighbours, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Soft label recommendations, float64 (Q, C): sum of ``exp(-d)`` per neighbour label, rows sum to 1.

    Weights are computed as ``exp(-(d - d_min))`` per row: the normalisation cancels the shift, and
    it keeps far-away neighbourhoods (raw embeddings with large norms) from underflowing to 0/0.
    """
    q, k = nbrs.indices.shape
    w = np.exp(-(nbrs.distances - nbrs.distances.min(axis=1, keepdims=True, initial=np.inf)))
    votes = np.zeros((q, num_classes), dtype=np.float64)
    rows = np.repeat(np.arange(q), k)
    np.add.at(votes, (rows, np.asarray(labels)[nbrs.indices].ravel()), w.ravel())
    return votes / votes.sum(axis=1, keepdims=True)


def recommend(
    embeddings: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    queries: np.ndarray | None = None,
    k: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Algorithm 1 on training points ``queries`` (default all).

    Returns ``(hard, soft, k)``: hard int64 (Q,) = argmax label, soft float64 (Q, C) = the normalised
    weighted votes, and the ``k`` used (lower median class count unless given).
    """
    k = lower_median_class_count(labels) if k is None else int(k)
    soft = weighted_votes(train_neighbours(embeddings, k, queries), labels, num_classes)
    return soft.argmax(axis=1).astype(np.int64), soft, k
