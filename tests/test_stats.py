"""Table 1 statistics against scipy on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from eif.tables.format import fmt
from eif.tables.table1 import DEGENERATE, NOT_ENOUGH, OK, compare, summary_keys


def test_group_pvalues_are_two_to_the_minus_m_when_eif_wins_every_group():
    rng = np.random.default_rng(0)
    d_if = rng.normal(0, 0.01, 30)
    d_eif = d_if + rng.uniform(0.001, 0.05, 30)  # EIF better on every group, no ties
    rows = compare("groups", d_eif, d_if, [10, 15, 20, 25, 30])
    paper = ["9.77E-04", "3.05E-05", "9.54E-07", "2.98E-08", "9.31E-10"]  # Table 1, CUB and CARS
    assert [fmt(r["pvalue"]) for r in rows] == paper
    for r, m in zip(rows, [10, 15, 20, 25, 30]):
        assert r["status"] == OK and r["pvalue"] == 2.0**-m
        assert r["improvement"] == pytest.approx(np.mean(d_eif[:m] - d_if[:m]))


def test_pair_t_test_reproduces_scipy_on_prefixes():
    rng = np.random.default_rng(1)
    d_eif, d_if = rng.normal(0.02, 0.01, 100), rng.normal(0.0, 0.01, 100)
    rows = compare("pairs", d_eif, d_if, [30, 50, 100])
    for r in rows:
        ref = stats.ttest_rel(d_eif[: r["n"]], d_if[: r["n"]], alternative="greater")
        assert r["pvalue"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert r["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
        assert r["test"] == "paired t-test" and r["available"] == 100
    assert rows[0]["pvalue"] < 1e-3


def test_wilcoxon_mixed_signs_matches_scipy_and_not_enough_confusions():
    d_eif = np.array([0.3, -0.1, 0.25, 0.05, -0.02, 0.4])
    d_if = np.zeros(6)
    rows = compare("groups", d_eif, d_if, [3, 5, 6, 10])
    for r in rows[:3]:
        ref = stats.wilcoxon(d_eif[: r["n"]], alternative="greater")
        assert r["status"] == OK and r["pvalue"] == pytest.approx(ref.pvalue)
    assert rows[3] == {
        "kind": "groups",
        "test": "Wilcoxon signed-rank",
        "n": 10,
        "available": 6,
        "status": NOT_ENOUGH,
        "improvement": None,
        "statistic": None,
        "pvalue": None,
    }


def test_identical_methods_are_degenerate_not_a_crash():
    rows = compare("groups", np.ones(5), np.ones(5), [5])
    assert rows[0]["status"] == DEGENERATE and rows[0]["pvalue"] is None
    assert rows[0]["improvement"] == 0.0


def test_summary_keys_name_the_prefix():
    rows = compare("pairs", [0.2, 0.1, 0.3], [0.0, 0.05, 0.1], [3, 30])
    keys = summary_keys(rows)
    assert set(keys) == {"table1/pairs/K=3/improvement", "table1/pairs/K=3/pvalue"}
    assert keys["table1/pairs/K=3/improvement"] == pytest.approx(0.15)
