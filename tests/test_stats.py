"""Table 1 statistics and the seed-level statistics against scipy and statsmodels on fixed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from eif.tables.format import fmt
from eif.tables.seedstats import (
    NO_CONFUSIONS,
    NOT_CONVERGED,
    ONE_SEED,
    across_seeds,
    mixed_model,
    paired_test,
    stouffer,
)
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


# ------------------------------------------------------------------ seed-level inference (seedstats)


def _seeds_with_shared_offsets(n_seeds: int = 5, n: int = 100) -> list[np.ndarray]:
    """Per-confusion differences whose seeds differ by much more than their confusions' noise allows:
    every seed's mean is off 0 in the same direction by chance of its model, not of the method."""
    rng = np.random.default_rng(3)
    offsets = np.array([0.9, -0.3, 1.2, 0.2, 0.6])[:n_seeds] * 1e-3
    return [o + rng.normal(0, 1e-3, n) for o in offsets]


def test_seed_level_tests_match_scipy_and_statsmodels():
    values = _seeds_with_shared_offsets()
    out = across_seeds(values, "two-sided", seed=0)
    means = np.array([v.mean() for v in values])
    assert out["n_seeds"] == 5 and out["mean"] == pytest.approx(means.mean(), rel=1e-12)
    assert out["t_pvalue"] == pytest.approx(stats.ttest_1samp(means, 0.0).pvalue, rel=1e-12)
    assert out["w_pvalue"] == pytest.approx(stats.wilcoxon(means).pvalue, rel=1e-12)
    boot = stats.bootstrap(
        (means,), np.mean, n_resamples=10_000, method="percentile", random_state=np.random.default_rng(0)
    )
    assert (out["low"], out["high"]) == pytest.approx(
        (boot.confidence_interval.low, boot.confidence_interval.high)
    )
    # The mixed model through statsmodels' formula interface, in units of 1e-3: the same Wald statistic.
    frame = pd.DataFrame({"y": np.concatenate(values) * 1e3, "seed": np.repeat(np.arange(5), 100)})
    fit = smf.mixedlm("y ~ 1", frame, groups=frame["seed"]).fit(reml=True)
    t = float(fit.tvalues.iloc[0])
    assert out["mixed_pvalue"] == pytest.approx(2 * stats.t(df=4).sf(abs(t)), rel=1e-4)
    one = across_seeds(values, "greater", seed=0)
    assert one["mixed_pvalue"] == pytest.approx(stats.t(df=4).sf(t), rel=1e-4)
    assert one["t_pvalue"] == pytest.approx(stats.ttest_1samp(means, 0.0, alternative="greater").pvalue)


def test_stouffer_is_overconfident_where_seeds_disagree():
    """Stouffer on within-model tests counts 500 confusions as replicates; seed-level tests count 5."""
    values = _seeds_with_shared_offsets()
    within = [stats.ttest_1samp(v, 0.0, alternative="greater").pvalue for v in values]
    assert stouffer(within) == pytest.approx(stats.combine_pvalues(within, method="stouffer").pvalue)
    out = across_seeds(values, "greater", seed=0)
    assert stouffer(within) < 1e-10
    assert out["t_pvalue"] > 1e-3 and out["mixed_pvalue"] > 1e-3 and out["w_pvalue"] > 1e-3


def test_few_seeds_and_failed_fits_are_reported_not_raised():
    one = across_seeds([np.array([0.1, 0.2, 0.3])], "two-sided", seed=0)
    assert one["status"] == ONE_SEED and one["t_pvalue"] is None and one["mixed_pvalue"] is None
    assert one["mean"] == pytest.approx(0.2) and np.isnan(one["low"])
    scalars = across_seeds([[0.3], [0.2], [0.5]], "two-sided", seed=0)
    assert scalars["status"] == NO_CONFUSIONS and scalars["t_pvalue"] is not None
    nan = across_seeds([np.array([0.1, np.nan]), np.array([0.2, 0.3])], "two-sided", seed=0)
    assert nan["mixed_pvalue"] is None and "non-finite" in nan["status"]


def test_mixed_model_reports_an_optimiser_that_fails():
    """Seeds that agree more than their confusions do: the between-seed variance sits on the boundary
    (0), where BFGS stalls; alone it fails (and says so), the derivative-free fallbacks converge."""
    values = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        d_if = rng.normal(0, 0.01, 40)
        values.append(d_if + 0.004 + rng.normal(0, 0.01, 40) - rng.normal(0, 0.01, 40))
    assert mixed_model(values, "two-sided", optimisers=("bfgs",)) == (None, NOT_CONVERGED)
    p, status = mixed_model(values, "two-sided")
    assert status == "ok" and 0 < p < 1
    out = across_seeds(values, "two-sided", seed=0)
    assert out["mixed_pvalue"] == p and out["status"] == "ok"


def test_paired_test_is_two_sided_unless_asked():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 1, 40)  # b is better
    _, two = paired_test("pairs", a, b)
    _, greater = paired_test("pairs", a, b, "greater")
    assert two == pytest.approx(stats.ttest_rel(a, b).pvalue) and greater > 0.99 and two < 0.05
    _, w = paired_test("groups", a[:12], b[:12])
    assert w == pytest.approx(stats.wilcoxon(a[:12] - b[:12]).pvalue)
