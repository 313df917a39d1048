"""Mining: faiss 1-NN against scikit-learn, distinct confusion pairs, the group rule on hand-built counts,
mis-similar pairs, and the mine stage on a tiny trained model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from eif.influence.mining import (
    NearestNeighbours,
    confusion_groups,
    confusion_pairs,
    missimilar_pairs,
    nearest_neighbours,
    pair_distance,
)
from eif.pipeline import run_job


def random_embeddings(seed=0, n=200, e=8, c=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    z = rng.normal(size=(n, e)).astype(np.float32) + 0.8 * np.eye(c, e, dtype=np.float32)[labels]
    return z, labels


def test_nearest_neighbours_match_sklearn_and_pairs_follow_the_rules():
    z, y = random_embeddings()
    nn = nearest_neighbours(z, y)
    dist, idx = NearestNeighbors(n_neighbors=2).fit(z).kneighbors(z)
    np.testing.assert_array_equal(nn.index, idx[:, 1])
    np.testing.assert_allclose(nn.dist, dist[:, 1], rtol=1e-4)
    wrong = np.flatnonzero(y[idx[:, 1]] != y)
    pairs = confusion_pairs(nn, y, 10, "index", unique=False)  # the reference: every wrong sample
    np.testing.assert_array_equal(pairs, np.stack([wrong[:10], idx[wrong[:10], 1]], 1))
    close = confusion_pairs(nn, y, 1000, "distance", unique=False)
    assert len(close) == len(wrong) and np.all(np.diff(dist[close[:, 0], 1]) >= 0)
    assert np.all(y[close[:, 0]] != y[close[:, 1]])


def test_pair_distance_is_two_minus_two_cos():
    z, _ = random_embeddings(1, n=10)
    pairs = np.array([[0, 1], [2, 3]])
    cos = (
        (z[pairs[:, 0]] * z[pairs[:, 1]]).sum(1)
        / np.linalg.norm(z[pairs[:, 0]], axis=1)
        / np.linalg.norm(z[pairs[:, 1]], axis=1)
    )
    np.testing.assert_allclose(pair_distance(z, pairs), 2 - 2 * cos, rtol=1e-5)


def hand_nn():
    """Class 0: 10 samples, 8 wrong: 3 -> class 1, 3 -> class 2, 2 -> class 3 (shares .375, .75, 1).
    Class 4: 4 samples, 4 wrong, one to each of 4 classes (.25 each, passes 0.5 after two).
    Class 9: 2 samples, 1 wrong. Neighbour indices point at a sample of the predicted class."""
    labels = np.array([0] * 10 + [4] * 4 + [9] * 2 + [1, 2, 3, 5, 6, 7])
    pred = np.array([1, 1, 1, 2, 2, 2, 3, 3, 0, 0] + [1, 2, 5, 6] + [9, 7] + [1, 2, 3, 5, 6, 7])
    first_of = {int(c): int(np.flatnonzero(labels == c)[-1]) for c in np.unique(labels)}
    index = np.array([first_of[int(p)] for p in pred])
    return NearestNeighbours(index=index, label=pred, dist=np.zeros(len(pred))), labels


def test_groups_take_the_smallest_prefix_over_half():
    nn, labels = hand_nn()
    groups = confusion_groups(nn, labels, num=30, share=0.5, max_confused=10)
    assert [g.cls for g in groups] == [0, 4, 9]  # by wrong count, then class id
    g0 = groups[0]
    assert g0.n_wrong == 8 and list(g0.confused) == [1, 2]  # 3/8 = .375 fails, 6/8 = .75 passes
    np.testing.assert_allclose(g0.shares, [0.375, 0.75])
    np.testing.assert_array_equal(g0.pairs[:, 0], np.arange(6))
    np.testing.assert_array_equal(labels[g0.pairs[:, 1]], [1, 1, 1, 2, 2, 2])
    assert list(groups[1].confused) == [1, 2, 5]  # .25, .5 (not > .5), .75
    assert list(groups[2].confused) == [7] and groups[2].pairs.tolist() == [[15, nn.index[15]]]


def test_groups_fallback_takes_all_confused_classes():
    nn, labels = hand_nn()
    # With max_confused=2 no prefix of class 4's two top classes passes 0.5: take both.
    g4 = confusion_groups(nn, labels, num=2, share=0.5, max_confused=2)[1]
    assert g4.cls == 4 and list(g4.confused) == [1, 2] and len(g4.pairs) == 2
    # A share no prefix can pass: every confused class (up to max_confused).
    g0 = confusion_groups(nn, labels, num=1, share=1.0, max_confused=10)[0]
    assert list(g0.confused) == [1, 2, 3] and len(g0.pairs) == 8


def test_missimilar_pairs_are_farthest_same_class_pairs():
    z, y = random_embeddings(2, n=120)
    pairs = missimilar_pairs(z, y, num=15, chunk=7)
    dist = pairwise_distances(z.astype(np.float64))
    same = y[:, None] == y[None, :]
    far = np.where(same, dist, -1).argmax(1)
    expected = {tuple(sorted((i, int(far[i])))) for i in range(len(y))}
    assert all(tuple(p) in expected for p in pairs.tolist()) and len({tuple(p) for p in pairs.tolist()}) == 15
    assert np.all(y[pairs[:, 0]] == y[pairs[:, 1]])
    d = dist[pairs[:, 0], pairs[:, 1]]
    assert np.all(np.diff(d) <= 1e-5)
    best = sorted((dist[a, b] for a, b in expected), reverse=True)[:15]
    np.testing.assert_allclose(d, best, rtol=1e-5)


def _unordered(pairs: np.ndarray) -> list[tuple[int, int]]:
    return [(min(a, b), max(a, b)) for a, b in pairs.tolist()]


def _mutual_wrong(nn: NearestNeighbours, labels: np.ndarray) -> set[tuple[int, int]]:
    """Unordered pairs {i, j} of mutual nearest neighbours with different labels, by brute force."""
    return {
        (min(i, int(j)), max(i, int(j)))
        for i, j in enumerate(nn.index)
        if nn.index[j] == i and labels[i] != labels[j]
    }


@pytest.mark.parametrize("order", ["index", "distance"])
def test_confusion_pairs_count_a_mutual_pair_once(order):
    z, y = random_embeddings(3, n=300, c=8)
    nn = nearest_neighbours(z, y)
    mutual = _mutual_wrong(nn, y)
    assert len(mutual) >= 3  # the data must hold the case under test
    reference = confusion_pairs(nn, y, 10_000, order, unique=False)
    wrong = np.flatnonzero(y[nn.index] != y)
    assert len(reference) == len(wrong)  # the reference: every wrong sample with its 1-NN
    assert sum(c == 2 for c in Counter(_unordered(reference)).values()) == len(mutual)
    pairs = confusion_pairs(nn, y, 10_000, order)
    assert len(set(_unordered(pairs))) == len(pairs) == len(wrong) - len(mutual)
    assert set(_unordered(pairs)) == set(_unordered(reference))
    # the first of the two in the order is kept, the order itself is unchanged
    kept = [tuple(p) for p in pairs.tolist()]
    assert kept == [p for p in map(tuple, reference.tolist()) if p in set(kept)]
    first = {}
    for p in map(tuple, reference.tolist()):
        first.setdefault((min(p), max(p)), p)
    assert set(kept) == set(first.values())
    np.testing.assert_array_equal(confusion_pairs(nn, y, 7, order), pairs[:7])


@pytest.mark.slow
def test_mine_stage_mines_distinct_pairs_and_the_reference_is_one_setting(tmp_path: Path, fmnist_available):
    """A real (tiny) trained model: the default mine stage has no unordered pair twice; with
    mine.unique_pairs=false it mines every wrong test sample with its 1-NN, mutual pairs twice."""
    mined = {}
    for unique in (True, False):
        cfg = compose_cfg(
            tmp_path,
            [
                "stages=[mine]",
                "mine.num_pairs=10000",
                f"mine.unique_pairs={str(unique).lower()}",
                "progress=false",
            ],
        )
        record = run_job(cfg)
        with np.load(Path(record["artifacts"]["mine"]) / "mine.npz") as arr:
            mined[unique] = {k: arr[k] for k in ("pairs", "pair_d", "nn_index", "labels")}
    nn = NearestNeighbours(
        index=mined[True]["nn_index"], label=mined[True]["labels"][mined[True]["nn_index"]], dist=np.zeros(0)
    )
    mutual = _mutual_wrong(nn, mined[True]["labels"])
    distinct, reference = mined[True]["pairs"], mined[False]["pairs"]
    assert len(set(_unordered(distinct))) == len(distinct) > 0
    assert len(reference) == len(distinct) + len(mutual)
    assert set(_unordered(reference)) == set(_unordered(distinct))
    assert len(mutual) > 0, "the tiny model has no mutual confusions: the reference setting is untested"
