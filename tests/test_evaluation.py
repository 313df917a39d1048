"""Recall@K, NMI and MAP@R against pytorch-metric-learning and brute force; faiss kNN details."""

from __future__ import annotations

import sys

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKMeans
from sklearn.metrics import normalized_mutual_info_score

from eif.evaluation import (
    evaluate_embeddings,
    evaluate_query_gallery,
    map_at_r,
    nmi,
    recall_at_k,
    recall_at_k_query_gallery,
)
from eif.evaluation.knn import flat_index, kmeans, knn, use_gpu
from eif.utils.errors import EifError


def _blobs(n: int = 300, dim: int = 16, classes: int = 6, spread: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim)) * 1.5
    emb = (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32)
    return emb, labels


def _brute_ranking(q: np.ndarray, r: np.ndarray, self_search: bool, metric: str = "euclidean") -> np.ndarray:
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    if metric == "euclidean":
        score = ((q64[:, None, :] - r64[None, :, :]) ** 2).sum(-1)
    else:
        score = -(q64 @ r64.T)
    if self_search:
        np.fill_diagonal(score, np.inf)
    order = np.argsort(score, axis=1, kind="stable")
    return order[:, : r.shape[0] - int(self_search)]


def _brute_recall(ranking: np.ndarray, yq: np.ndarray, yr: np.ndarray, k: int) -> float:
    return float(np.mean((yr[ranking[:, :k]] == yq[:, None]).any(1)))


def _brute_map_at_r(ranking: np.ndarray, yq: np.ndarray, yr: np.ndarray, self_search: bool) -> float:
    aps = []
    for i in range(len(yq)):
        r = int((yr == yq[i]).sum()) - int(self_search)
        if r == 0:
            continue
        rel = yr[ranking[i, :r]] == yq[i]
        prec = np.cumsum(rel) / np.arange(1, r + 1)
        aps.append((prec * rel).sum() / r)
    return float(np.mean(aps))


def test_recall_at_1_and_map_at_r_match_pml():
    emb, labels = _blobs(spread=3.0)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count")
    pml = calc.get_accuracy(torch.from_numpy(emb), torch.from_numpy(labels))
    r1 = recall_at_k(emb, labels, [1])[1]
    assert 0.3 < r1 < 0.95  # a non-trivial case
    assert r1 == pytest.approx(pml["precision_at_1"], abs=1e-9)
    assert map_at_r(emb, labels) == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


def test_nmi_matches_pml_and_sklearn():
    """Same faiss k-means (seed, iterations) in PML and here gives the same partition; PML reports sklearn's
    arithmetic normalisation, we the reference's geometric one."""
    emb, labels = _blobs(spread=2.0)
    clusters = kmeans(emb, 6, seed=7)
    calc = AccuracyCalculator(include=("NMI",), kmeans_func=FaissKMeans(niter=25, seed=7))
    pml = calc.get_accuracy(torch.from_numpy(emb), torch.from_numpy(labels))["NMI"]
    assert pml == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-9)
    ours = nmi(emb, labels, seed=7)
    assert ours == pytest.approx(
        normalized_mutual_info_score(labels, clusters, average_method="geometric"), abs=1e-9
    )
    assert 0.3 < ours < 0.98
    assert nmi(emb, labels, seed=7) == ours


@pytest.mark.parametrize("metric", ["euclidean", "inner_product"])
def test_recall_and_map_at_r_match_brute_force(metric):
    emb, labels = _blobs(n=200, classes=7, spread=1.5, seed=3)
    ranking = _brute_ranking(emb, emb, self_search=True, metric=metric)
    expected = _brute_map_at_r(ranking, labels, labels, True)
    assert map_at_r(emb, labels, metric=metric) == pytest.approx(expected, abs=1e-6)
    if metric == "euclidean":
        got = recall_at_k(emb, labels, [1, 2, 4, 8])
        for k in (1, 2, 4, 8):
            assert got[k] == pytest.approx(_brute_recall(ranking, labels, labels, k), abs=1e-9)
        assert got[1] < got[2] < got[8]


def test_query_gallery_match_brute_force():
    emb, labels = _blobs(n=260, classes=13, spread=1.2, seed=4)
    q, yq, g, yg = emb[:100], labels[:100], emb[100:], labels[100:]
    yq = yq.copy()
    yq[0] = 99  # a query whose class is not in the gallery is skipped by MAP@R but counts for recall
    ranking = _brute_ranking(q, g, self_search=False)
    got = recall_at_k_query_gallery(q, yq, g, yg, [1, 10, 20])
    for k in (1, 10, 20):
        assert got[k] == pytest.approx(_brute_recall(ranking, yq, yg, k), abs=1e-9)
    assert map_at_r(q, yq, g, yg) == pytest.approx(_brute_map_at_r(ranking, yq, yg, False), abs=1e-6)
    out = evaluate_query_gallery(q, yq, g, yg, [1, 10, 20])
    assert set(out) == {"recall@1", "recall@10", "recall@20", "nmi", "map@r"}
    assert out["recall@10"] == got[10]


def test_knn_excludes_self_by_index_with_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 4)).astype(np.float32)
    far = rng.normal(size=(3, 4)).astype(np.float32) + 100
    x = np.concatenate([np.repeat(base, 5, axis=0), far])  # rows 0..4 are exact duplicates
    dist, idx = knn(x, None, 4)
    for i in range(5):
        assert i not in idx[i]
        assert set(idx[i]) == set(range(5)) - {i}
        np.testing.assert_allclose(dist[i], 0, atol=1e-3)
    # more exact duplicates than k: still never the row itself
    _, idx2 = knn(x, None, 2)
    assert all(i not in idx2[i] and set(idx2[i]) <= set(range(5)) for i in range(5))
    # duplicates with different labels: each duplicate's nearest neighbour is another duplicate
    labels = np.array([0, 1, 2, 3, 4, 5, 5, 5])
    assert recall_at_k(x, labels, [1])[1] == pytest.approx(3 / 8)


def test_knn_distances_are_euclidean_and_sorted():
    emb, _ = _blobs(n=50)
    dist, idx = knn(emb, emb[:20], 5)
    brute = np.sqrt(((emb[:, None, :].astype(np.float64) - emb[None, :20]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, np.take_along_axis(brute, idx, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dist, np.sort(brute, 1)[:, :5], rtol=1e-4, atol=1e-4)
    with pytest.raises(EifError, match="k must be"):
        knn(emb, None, 50)


def test_kmeans_is_seeded_and_evaluate_embeddings_keys():
    emb, labels = _blobs(spread=0.8)
    a, b = kmeans(emb, 6, seed=5), kmeans(emb, 6, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and set(a) == set(range(6))
    out = evaluate_embeddings(torch.from_numpy(emb), torch.from_numpy(labels), [1, 2, 4, 8])
    assert set(out) == {"recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r"}
    assert all(0 <= v <= 1 for v in out.values())
    only_recall = evaluate_embeddings(emb, labels, [1], with_nmi=False, with_map_at_r=False)
    assert only_recall == {"recall@1": out["recall@1"]}


def test_gpu_selection_degrades_to_cpu_here():
    expect_gpu = faiss.get_num_gpus() > 0 and torch.cuda.is_available()
    assert use_gpu() == expect_gpu
    if not expect_gpu:
        assert isinstance(flat_index(8), faiss.IndexFlatL2)
        assert isinstance(flat_index(8, "inner_product"), faiss.IndexFlatIP)


def test_missing_faiss_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(EifError, match="faiss is not importable"):
        recall_at_k(np.zeros((4, 2), np.float32), np.zeros(4), [1])


def test_chunked_search_equals_one_chunk(monkeypatch):
    emb, labels = _blobs(n=100, spread=2.0)
    whole = knn(emb, None, 5)
    monkeypatch.setattr("eif.evaluation.knn.QUERY_CHUNK", 7)
    chunked = knn(emb, None, 5)
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[0], whole[0])
    expected = _brute_map_at_r(_brute_ranking(emb, emb, True), labels, labels, True)
    assert map_at_r(emb, labels) == pytest.approx(expected, abs=1e-6)
