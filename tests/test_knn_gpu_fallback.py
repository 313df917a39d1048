"""faiss on GPU falls back, never fails, where the CPU works: the k limit, the configured GPU, GPU errors.

There is no GPU on the machines that run this suite, and faiss-cpu has no GPU classes. So the faiss GPU
classes are replaced by stand-ins: each is a real faiss CPU flat index (so the search, and k-means'
C++ training loop, run for real) that records which GPU it was built for and, like faiss GPU, refuses
k > 2048. Everything else (the choice of index, the k-limit fallback, the error fallback, the result
assembly) is eif's real code, and every result is compared with the plain CPU path.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest
import torch

import eif.evaluation.knn as knn_module
from eif.evaluation.knn import FAISS_GPU_MAX_K, gpu_device, kmeans, knn, set_device
from eif.evaluation.metrics import map_at_r, recall_at_k
from eif.mislabel.knn import train_neighbours

BUILT: list[tuple[str, int]] = []  # (index class, GPU) of every stand-in GPU index, in build order


class StandInGpuResources:
    """Stands in for ``faiss.StandardGpuResources`` (nothing to allocate without a GPU)."""


class StandInGpuIndexFlatConfig:
    """Stands in for ``faiss.GpuIndexFlatConfig``: only ``device`` is used."""

    def __init__(self) -> None:
        self.device = 0


def _stand_in(cpu_class: type, name: str, fail_on_add: bool = False) -> type:
    class StandInGpuIndex(cpu_class):  # type: ignore[misc, valid-type]
        def __init__(self, res: object, dim: int, config: StandInGpuIndexFlatConfig) -> None:
            assert isinstance(res, StandInGpuResources)
            super().__init__(dim)
            BUILT.append((name, config.device))

        def add(self, x: np.ndarray) -> None:
            if fail_on_add:
                raise RuntimeError(
                    "Error in virtual void* faiss::gpu::StandardGpuResourcesImpl: out of memory"
                )
            super().add(x)

        def search(self, x: np.ndarray, k: int, *args: object, **kwargs: object) -> object:
            if k > FAISS_GPU_MAX_K:  # what faiss GPU's flat search refuses
                raise RuntimeError(f"Error: 'k <= GPU_MAX_SELECTION_K' failed: k {k} > {FAISS_GPU_MAX_K}")
            return super().search(x, k, *args, **kwargs)

    return StandInGpuIndex


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Two 'GPUs' that faiss and torch both report; set_device is reset after the test."""
    BUILT.clear()
    monkeypatch.setattr(knn_module, "_device", None)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(faiss, "StandardGpuResources", StandInGpuResources, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatConfig", StandInGpuIndexFlatConfig, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatL2", _stand_in(faiss.IndexFlatL2, "L2"), raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", _stand_in(faiss.IndexFlatIP, "IP"), raising=False)
    return monkeypatch


def _cpu(fn, *args, **kwargs):  # noqa: ANN001, ANN202 - any knn/kmeans call, pinned to the CPU path
    previous = knn_module._device
    set_device("cpu")
    try:
        return fn(*args, **kwargs)
    finally:
        knn_module._device = previous


def _points(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_configured_gpu_is_used_and_matches_cpu(fake_gpus: pytest.MonkeyPatch) -> None:
    x, ref = _points(300), _points(200, seed=1)
    assert gpu_device() == 0  # default: torch's current CUDA device
    set_device("cuda:1")
    assert gpu_device() == 1
    for metric, kind in (("euclidean", "L2"), ("inner_product", "IP")):
        BUILT.clear()
        got = knn(x, None, 7, metric=metric)
        assert BUILT == [(kind, 1)]
        want = _cpu(knn, x, None, 7, metric=metric)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        got_qg, want_qg = knn(x, ref, 5, metric=metric), _cpu(knn, x, ref, 5, metric=metric)
        np.testing.assert_array_equal(got_qg[1], want_qg[1])


def test_k_at_the_limit_stays_on_gpu_and_beyond_it_falls_back(fake_gpus: pytest.MonkeyPatch) -> None:
    n = FAISS_GPU_MAX_K + 60
    x = _points(n, dim=4)
    set_device("cuda:1")
    # self-search excludes each row: k + 1 = 2048 is the last k faiss GPU serves
    at_limit = knn(x, None, FAISS_GPU_MAX_K - 1)
    assert BUILT == [("L2", 1)]
    np.testing.assert_array_equal(at_limit[1], _cpu(knn, x, None, FAISS_GPU_MAX_K - 1)[1])
    BUILT.clear()
    beyond = knn(x, None, FAISS_GPU_MAX_K)  # k + 1 = 2049: searched on the CPU index, no error
    assert BUILT == []
    want = _cpu(knn, x, None, FAISS_GPU_MAX_K)
    np.testing.assert_array_equal(beyond[1], want[1])
    np.testing.assert_array_equal(beyond[0], want[0])
    # a query -> reference search with k > 2048 as well
    np.testing.assert_array_equal(knn(x[:50], x, n - 1)[1], _cpu(knn, x[:50], x, n - 1)[1])
    assert BUILT == []


def test_metrics_with_a_class_larger_than_the_gpu_k_limit(fake_gpus: pytest.MonkeyPatch) -> None:
    """MAP@R searches k = R (the largest class size): the issue's Fashion-MNIST case, max_per_class > 2048."""
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(FAISS_GPU_MAX_K + 20, np.int64), np.ones(40, np.int64)]
    x = (rng.normal(size=(labels.size, 6)) + 0.7 * labels[:, None]).astype(np.float32)
    set_device("cuda:0")
    got = map_at_r(x, labels)
    assert BUILT == []  # k = 2067 > 2047
    assert got == pytest.approx(_cpu(map_at_r, x, labels), abs=0)
    assert recall_at_k(x, labels, [1, 4]) == _cpu(recall_at_k, x, labels, [1, 4])
    assert BUILT == [("L2", 0)]  # Recall@K's small k ran on the GPU stand-in
    # the weighted kNN of Algorithm 1 (k = median class size) takes the same route
    nb = train_neighbours(x, FAISS_GPU_MAX_K + 1)
    want = _cpu(train_neighbours, x, FAISS_GPU_MAX_K + 1)
    np.testing.assert_array_equal(nb.indices, want.indices)
    np.testing.assert_array_equal(nb.distances, want.distances)


def test_gpu_error_is_redone_on_cpu(fake_gpus: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake_gpus.setattr(faiss, "GpuIndexFlatL2", _stand_in(faiss.IndexFlatL2, "L2", fail_on_add=True))
    x = _points(120)
    with caplog.at_level(logging.WARNING, logger="eif.evaluation.knn"):
        got = knn(x, None, 3)
    assert BUILT == [("L2", 0)]
    assert "faiss on GPU 0 failed" in caplog.text and "redoing it on the CPU" in caplog.text
    np.testing.assert_array_equal(got[1], _cpu(knn, x, None, 3)[1])


def test_kmeans_on_configured_gpu_matches_cpu(fake_gpus: pytest.MonkeyPatch) -> None:
    x = _points(400, dim=5)
    set_device(torch.device("cuda", 1))
    got = kmeans(x, 6, seed=2)
    assert BUILT == [("L2", 1)]  # one assignment index, on GPU 1 (faiss's own gpu=True spans all GPUs)
    np.testing.assert_array_equal(got, _cpu(kmeans, x, 6, seed=2))


def test_device_cpu_keeps_faiss_off_the_gpus(fake_gpus: pytest.MonkeyPatch) -> None:
    set_device("cpu")
    assert gpu_device() is None
    knn(_points(50), None, 3)
    kmeans(_points(50), 3)
    assert BUILT == []
    set_device(None)  # back to the default: the current CUDA device
    assert gpu_device() == 0
