"""Mining: faiss 1-NN against scikit-learn, the group rule on hand-built counts, mis-similar pairs."""

from __future__ import annotations

import numpy as np
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
    pairs = confusion_pairs(nn, y, 10, "index")
    np.testing.assert_array_equal(pairs, np.stack([wrong[:10], idx[wrong[:10], 1]], 1))
    close = confusion_pairs(nn, y, 1000, "distance")
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
