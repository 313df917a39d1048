"""Mislabel detection, Algorithm 1 relabelling and the Table 5 survey, on small hand-built arrays."""

from __future__ import annotations

import numpy as np
import pytest

from eif.mislabel import detect, knn, relabel, survey


def brute_force_votes(emb: np.ndarray, labels: np.ndarray, c: int, k: int) -> np.ndarray:
    """The reference's algorithm, literally: full N x N Euclidean matrix, argsort, drop position 0."""
    d = np.sqrt(((emb[:, None, :].astype(np.float64) - emb[None, :, :]) ** 2).sum(-1))
    nn = np.argsort(d, axis=1, kind="stable")[:, 1 : k + 1]
    out = np.zeros((emb.shape[0], c))
    for i in range(emb.shape[0]):
        for j in nn[i]:
            out[i, labels[j]] += np.exp(-d[i, j])
    return out / out.sum(axis=1, keepdims=True)


def test_lower_median_class_count() -> None:
    labels = np.array([0] * 3 + [1] * 5 + [2] * 7 + [3] * 9)  # counts 3 5 7 9: lower middle = 5
    assert knn.lower_median_class_count(labels) == 5
    assert knn.lower_median_class_count(np.array([0, 0, 1, 2, 2, 2])) == 2  # counts 1 2 3


def test_weighted_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    c, n = 4, 120
    centres = rng.normal(size=(c, 8)) * 1.5
    labels = rng.integers(0, c, size=n)
    emb = (centres[labels] + rng.normal(size=(n, 8)) * 0.8).astype(np.float32)
    hard, soft, k = knn.recommend(emb, labels, c)
    assert k == knn.lower_median_class_count(labels)
    ref = brute_force_votes(emb, labels, c, k)
    np.testing.assert_allclose(soft, ref, atol=1e-5)
    np.testing.assert_array_equal(hard, ref.argmax(1))
    np.testing.assert_allclose(soft.sum(1), 1.0)
    # A subset of queries gives the same rows.
    q = np.array([5, 17, 99])
    _, soft_q, _ = knn.recommend(emb, labels, c, queries=q, k=k)
    np.testing.assert_allclose(soft_q, soft[q], atol=1e-12)


def test_self_excluded_by_identity_even_with_duplicates() -> None:
    emb = np.array([[0.0], [0.0], [10.0], [10.1]], dtype=np.float32)
    nb = knn.train_neighbours(emb, k=1)
    # Point 0's nearest other point is its exact duplicate 1, and vice versa.
    np.testing.assert_array_equal(nb.indices[:, 0], [1, 0, 3, 2])
    np.testing.assert_allclose(nb.distances[:, 0], [0.0, 0.0, 0.1, 0.1], atol=1e-5)


def test_far_neighbourhoods_do_not_underflow() -> None:
    emb = np.array([[0.0], [2000.0], [2001.0], [2003.0]], dtype=np.float32)
    _, soft, _ = knn.recommend(emb, np.array([0, 1, 1, 0]), 2, queries=np.array([0]), k=2)
    # Both neighbours (at 2000 and 2001, label 1) have exp(-d) == 0.0 in float64: unshifted, 0/0.
    np.testing.assert_allclose(soft[0], [0.0, 1.0])


def test_detection_area_on_known_ranking() -> None:
    n = 10
    flipped = np.array([2, 7])
    order = np.array([2, 0, 1, 7, 3, 4, 5, 6, 8, 9])  # flips at positions 0 and 3
    x, y = detect.detection_curve(order, flipped, n)
    assert x[0] == 0 and x[-1] == 1 and y[0] == 0 and y[-1] == 1
    np.testing.assert_allclose(y[1:5], [0.5, 0.5, 0.5, 1.0])
    # area = sum over flips of (N - p) / (m N) = (10 + 7) / 20
    assert detect.curve_area(y) == pytest.approx(17 / 20)
    assert detect.recall_at(y, 0.1) == 0.5 and detect.recall_at(y, 0.2) == 0.5
    assert detect.recall_at(y, 0.5) == 1.0
    best = detect.curve_area(detect.detection_curve(np.r_[flipped, [0, 1, 3, 4, 5, 6, 8, 9]], flipped, n)[1])
    worst = detect.curve_area(detect.detection_curve(np.r_[[0, 1, 3, 4, 5, 6, 8, 9], flipped], flipped, n)[1])
    assert best == pytest.approx(19 / 20) and worst == pytest.approx(3 / 20)


def test_random_ranking_area_near_half_and_descending_order() -> None:
    n = 20000
    flipped = np.random.default_rng(1).choice(n, 2000, replace=False)
    area = detect.curve_area(detect.detection_curve(detect.random_ranking(n, 0), flipped, n)[1])
    assert abs(area - 0.5) < 0.02
    np.testing.assert_array_equal(detect.descending(np.array([0.1, -2.0, 3.0, 0.1])), [2, 0, 3, 1])
    with pytest.raises(Exception, match="permutation"):
        detect.detection_curve(np.array([0, 0, 1]), np.array([1]), 3)


def test_cleanlab_rankings_find_planted_flips() -> None:
    rng = np.random.default_rng(0)
    n, c = 300, 3
    clean = rng.integers(0, c, size=n)
    emb = (np.eye(c)[clean] * 6 + rng.normal(size=(n, c))).astype(np.float32)
    noisy = clean.copy()
    flipped = rng.choice(n, 30, replace=False)
    noisy[flipped] = (clean[flipped] + 1) % c
    _, soft, _ = knn.recommend(emb, noisy, c)
    ranks = detect.cleanlab_rankings(noisy, soft)
    table, _ = detect.summarise({**ranks, "random": detect.random_ranking(n, 0)}, flipped, n)
    areas = dict(zip(table.ranking, table.area))
    assert areas["cleanlab_quality"] > 0.9 and areas["cleanlab_issues"] > 0.9
    assert sorted(ranks["cleanlab_issues"]) == list(range(n))


def test_second_label_rule_and_accuracy() -> None:
    soft = np.array(
        [
            [0.6, 0.3, 0.1],  # top-1 = 0 = noisy label -> 2nd label 1 = clean: second rule only
            [0.1, 0.2, 0.7],  # top-1 = 2 = clean: both
            [0.5, 0.4, 0.1],  # top-1 = 0 != noisy 1, clean 2: neither
            [0.2, 0.7, 0.1],
        ]
    )  # not a flip: not counted
    queries = np.array([0, 1, 2, 3])
    current = np.array([0, 0, 1, 1])
    clean = np.array([1, 2, 2, 1])
    acc = relabel.relabel_accuracy(soft, queries, current, clean, flipped=np.array([0, 1, 2, 9]))
    assert acc["flips_in_set"] == 3
    assert acc["strict"] == pytest.approx(1 / 3) and acc["second_label"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(relabel.second_label_prediction(soft, current), [1, 2, 0, 0])


def test_review_table() -> None:
    soft = np.array([[0.2, 0.8], [0.9, 0.1]])
    t = relabel.review_table(np.array([4, 7]), soft, np.array([0] * 8), None, np.array([0.5, 2.0]))
    assert list(t.sample_id) == [7, 4] and list(t.image) == ["index:7", "index:4"]
    assert list(t.recommended_label) == [0, 1] and list(t.changes_label) == [False, True]
    assert t.probability.tolist() == [0.9, 0.8]


def _survey(labels: np.ndarray, predicted: np.ndarray, c: int, rule: str):
    d = survey.class_details(labels, predicted, c)
    return d, survey.categorise(d, rule)


def test_table5_rules_on_hand_built_distributions() -> None:
    blocks, preds = [], []

    def add(cls: int, n: int, moves: dict[int, int]) -> None:
        blocks.append(np.full(n, cls))
        p = np.full(n, cls)
        i = 0
        for target, cnt in moves.items():
            p[i : i + cnt] = target
            i += cnt
        preds.append(p)

    add(0, 100, {1: 19, 2: 1})  # p=.20, top other .19 >= .18; H(.95,.05)=.199 -> central
    add(1, 100, {0: 10, 2: 10})  # p=.20, top .10 < .18; H=ln2 -> diversified both
    add(2, 100, {0: 17, 1: 3})  # p=.20, .17 < .18 -> diversified; H(.85,.15)=.423 too
    add(3, 100, {0: 18, 1: 2})  # p=.20, .18 >= .18 -> central (ref); H(.9,.1)=.325 -> central
    add(4, 100, {0: 3, 1: 1})  # p=.04 -> individual
    add(5, 100, {0: 7})  # p=.07 -> others
    add(6, 100, {0: 10})  # p=.10 exactly -> centralized (both)
    add(7, 100, {})  # p=0 -> no suggestion
    add(8, 100, {0: 14, 1: 6})  # p=.20, .14 < .18 -> diversified (ref); H(.7,.3)=.611 diversified
    add(9, 40, {0: 2})  # p=.05 exactly -> individual
    labels, predicted = np.concatenate(blocks), np.concatenate(preds)
    d, ref = _survey(labels, predicted, 10, "reference")
    _, ent = _survey(labels, predicted, 10, "entropy")
    assert list(ref) == [
        "centralized",
        "diversified",
        "diversified",
        "centralized",
        "individual",
        "others",
        "centralized",
        "",
        "diversified",
        "individual",
    ]
    assert ent[0] == "centralized" and ent[3] == "centralized" and ent[2] == "diversified"

    def h(*q: float) -> float:
        return float(-sum(x * np.log(x) for x in q))

    np.testing.assert_allclose(d.entropy[[0, 1, 3, 7]], [h(0.95, 0.05), np.log(2), h(0.9, 0.1), 0.0])
    assert d.top_other[0] == 1 and d.top_other[7] == -1
    row = survey.table5(d, ref).iloc[0]
    assert (row.classes, row.total, row.centralized, row.diversified, row.individual, row.others) == (
        10,
        9,
        3,
        3,
        2,
        1,
    )
    assert row.relabel_share_all == pytest.approx(123 / 940)
    assert row.relabel_share_suggested_classes == pytest.approx(123 / 840)


def test_entropy_rule_differs_from_reference() -> None:
    # Three-way split .18 / .01 / .01 of p = .2: the 0.9 p rule sees a dominant class, the entropy does not.
    labels = np.full(100, 0)
    predicted = np.zeros(100, dtype=np.int64)
    predicted[:18] = 1
    predicted[18:19] = 2
    predicted[19:20] = 3  # p=.2, top .18 >= .18: ref central; H(.9,.05,.05) = .394: entropy diversified
    d = survey.class_details(labels, predicted, 4)
    assert survey.categorise(d, "reference")[0] == "centralized"
    assert survey.categorise(d, "entropy")[0] == "diversified"
    with pytest.raises(Exception, match="survey.rule"):
        survey.categorise(d, "other")
