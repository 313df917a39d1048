"""Mining test-set errors (docs/protocol.md, Mining): confusion pairs, confusion groups, mis-similar pairs.

All selection uses the retrieval metric of the reference: Euclidean distance on the raw (unnormalised)
test embeddings, 1-NN with the sample itself excluded (faiss, through :mod:`eif.evaluation.knn`).
The distance d a pair is *analysed* with is ``normalized_sq_distance`` (2 - 2 cos) of the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eif.evaluation.knn import knn
from eif.influence.task import normalized_sq_distance
from eif.utils.errors import require


@dataclass
class NearestNeighbours:
    """``index`` (N,) the 1-NN of every test sample, ``label`` (N,) its label, ``dist`` (N,) Euclidean."""

    index: np.ndarray
    label: np.ndarray
    dist: np.ndarray

    def wrong(self, labels: np.ndarray) -> np.ndarray:
        """Bool (N,): the 1-NN has another label (a generalisation error)."""
        return self.label != labels


@dataclass
class Group:
    """Test class ``cls`` (``n_wrong`` wrong 1-NN), its confused classes with their cumulative shares, and
    its pairs (n, 2): every sample of ``cls`` whose 1-NN label is confused, with that 1-NN."""

    cls: int
    n_wrong: int
    confused: np.ndarray
    shares: np.ndarray
    pairs: np.ndarray


def nearest_neighbours(embeddings: np.ndarray, labels: np.ndarray) -> NearestNeighbours:
    """1-NN of every row among the other rows (Euclidean, raw embeddings)."""
    dist, idx = knn(embeddings, None, 1)
    return NearestNeighbours(index=idx[:, 0], label=np.asarray(labels)[idx[:, 0]], dist=dist[:, 0])


def pair_distance(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """d = 2 - 2 cos of each pair (n, 2) -> (n,) float64."""
    z = torch.as_tensor(np.asarray(embeddings, np.float64))
    pairs = np.reshape(np.asarray(pairs, np.int64), (-1, 2))
    return normalized_sq_distance(z[pairs[:, 0]], z[pairs[:, 1]]).numpy()


def confusion_pairs(
    nn: NearestNeighbours, labels: np.ndarray, num: int, order: str = "index", unique: bool = True
) -> np.ndarray:
    """Up to ``num`` pairs (i, NN(i)) (int64 (K, 2)) whose 1-NN has another label.

    ``index``: the first ``num`` in test-index order (the reference). ``distance``: the closest pairs
    first by the Euclidean 1-NN distance that made them errors (ties by index): the paper's
    "most confusing". Mutual nearest neighbours i, j of different labels give (i, j) and (j, i), the
    same confusion: ``unique`` keeps only the first of the two in this order, so that no confusion
    counts twice; ``unique=False`` keeps both (the reference).
    """
    require(order in ("index", "distance"), f"mine.order must be index or distance, got {order!r}")
    wrong = np.flatnonzero(nn.wrong(labels))
    if order == "distance":
        wrong = wrong[np.argsort(nn.dist[wrong], kind="stable")]
    if unique:
        rank = np.full(len(nn.index), len(wrong), np.int64)  # position in the order; past the end if right
        rank[wrong] = np.arange(len(wrong))
        partner = nn.index[wrong]
        wrong = wrong[~((nn.index[partner] == wrong) & (rank[partner] < rank[wrong]))]
    wrong = wrong[: max(0, int(num))]
    return np.stack([wrong, nn.index[wrong]], 1).astype(np.int64)


def confusion_groups(
    nn: NearestNeighbours, labels: np.ndarray, num: int, share: float = 0.5, max_confused: int = 10
) -> list[Group]:
    """The ``num`` test classes with most wrong 1-NN (ties by class id), each with the smallest prefix of
    its up-to-``max_confused`` most-confused classes (by count, ties by class id) whose cumulative share
    of its errors is > ``share``; all of them when no prefix passes (fixing the reference's fallback)."""
    labels = np.asarray(labels)
    wrong = nn.wrong(labels)
    classes, counts = np.unique(labels[wrong], return_counts=True)
    top = np.lexsort((classes, -counts))[: max(0, int(num))]
    groups: list[Group] = []
    for c, n_wrong in zip(classes[top], counts[top]):
        mine = wrong & (labels == c)
        conf, ccount = np.unique(nn.label[mine], return_counts=True)
        rank = np.lexsort((conf, -ccount))[:max_confused]
        conf, cum = conf[rank], np.cumsum(ccount[rank]) / n_wrong
        passing = np.flatnonzero(cum > share)
        cut = passing[0] + 1 if len(passing) else len(conf)
        members = np.flatnonzero(mine & np.isin(nn.label, conf[:cut]))
        pairs = np.stack([members, nn.index[members]], 1).astype(np.int64)
        groups.append(
            Group(
                cls=int(c),
                n_wrong=int(n_wrong),
                confused=conf[:cut].astype(np.int64),
                shares=cum[:cut],
                pairs=pairs,
            )
        )
    return groups


def missimilar_pairs(embeddings: np.ndarray, labels: np.ndarray, num: int, chunk: int = 4096) -> np.ndarray:
    """Same class, far apart: for every test sample its farthest same-class sample (Euclidean, raw
    embeddings); each unordered pair once, farthest first (ties by index); the first ``num`` (K, 2)."""
    z = torch.as_tensor(np.asarray(embeddings, np.float32))
    labels = np.asarray(labels)
    far = np.empty(len(labels), np.int64)
    dist = np.empty(len(labels), np.float64)
    for c in np.unique(labels):  # one pass per class: the distance matrix is (n_c, n_c), chunked
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            far[idx], dist[idx] = idx, -np.inf
            continue
        zc = z[idx]
        for s in range(0, len(idx), chunk):
            d = torch.cdist(zc[s : s + chunk], zc)
            best = d.max(1)
            far[idx[s : s + chunk]] = idx[best.indices.numpy()]
            dist[idx[s : s + chunk]] = best.values.double().numpy()
    pairs = np.sort(np.stack([np.arange(len(labels)), far], 1), axis=1)
    keep = np.isfinite(dist)
    pairs, dist = pairs[keep], dist[keep]
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    dist = dist[first]
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -dist))[: max(0, int(num))]
    return pairs[order].astype(np.int64)
