"""The statistics every table shares: tests within one model (over its confusions) and across models
(over seeds, the unit of replication of a claim about methods).

Within a model: paired t-test (pairs) or Wilcoxon signed-rank (groups) of Δd_a against Δd_b, and a
percentile bootstrap interval of a mean. Across seeds (:func:`across_seeds`): each seed's mean, then

- a one-sample t-test and a Wilcoxon signed-rank test of the seed means against 0
  (``scipy.stats.ttest_1samp``, ``scipy.stats.wilcoxon``);
- the headline test, where per-confusion values are recorded: a linear mixed model with confusions
  nested in models, ``value ~ 1 + (1 | seed)`` (``statsmodels`` MixedLM, REML), the intercept's
  Wald statistic against t with (seeds - 1) degrees of freedom;
- a percentile bootstrap interval over seeds of the mean of the seed means;
- Stouffer's method on the within-model p-values, labelled "conditional on these models": it treats
  the trained models as fixed, so it overstates the evidence for a claim about methods.

p-values are two-sided unless the direction is pre-registered (the paper's H1 for EIF vs IF,
``alternative="greater"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM

Alternative = Literal["two-sided", "greater"]

TESTS = {"pairs": "paired t-test", "groups": "Wilcoxon signed-rank"}
RESAMPLES = 10_000
ONE_SEED = "1 seed: no across-seed test"
NO_CONFUSIONS = "one value per model: no mixed model"
NOT_CONVERGED = "mixed model did not converge"
# Tried in turn until one converges: the gradient methods stall where the between-seed variance is 0
# (a boundary), where the derivative-free ones still find the optimum.
OPTIMISERS = ("bfgs", "lbfgs", "powell", "nm")


def _statistic_p(result: Any) -> tuple[float, float]:
    """(statistic, p-value) of a scipy test result, whose first two fields they are (scipy's result
    classes are not typed for pyright)."""
    statistic, p = np.asarray(tuple(result)[:2], dtype=np.float64)
    return float(statistic), float(p)


def mean_ci(x: np.ndarray | Sequence[float], seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with a percentile bootstrap interval of the mean (``scipy.stats.bootstrap``,
    10,000 resamples, seeded); nan bounds below 2 values or with a non-finite one, the mean twice
    when all values are equal."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return float(x.mean()) if x.size else math.nan, math.nan, math.nan
    if x.size < 2 or not np.any(x != x[0]):
        m = float(x.mean()) if x.size else float("nan")
        return m, (m if x.size > 1 else float("nan")), (m if x.size > 1 else float("nan"))
    res = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_test(
    kind: str, a: np.ndarray, b: np.ndarray, alternative: Alternative = "two-sided"
) -> tuple[float | None, float | None]:
    """(statistic, p) of mean a vs mean b over one model's confusions: paired t-test (``pairs``) or
    Wilcoxon signed-rank (``groups``); (None, None) when degenerate (no variation, every difference 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance / all-zero differences
        s, p = _statistic_p(
            stats.ttest_rel(a, b, alternative=alternative)
            if kind == "pairs"
            else stats.wilcoxon(a - b, alternative=alternative)
        )
    # scipy's Wilcoxon returns p = 1 when every difference is zero; that is no test at all.
    if not math.isfinite(p) or (kind == "groups" and not np.any(a != b)):
        return None, None
    return (s if math.isfinite(s) else None), p


def one_sided(kind: str, a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """:func:`paired_test` of H1 mean a > mean b."""
    return paired_test(kind, a, b, "greater")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def mixed_model(
    values: Sequence[np.ndarray], alternative: Alternative, optimisers: Sequence[str] = OPTIMISERS
) -> tuple[float | None, str]:
    """(p, status) of the intercept of ``value ~ 1 + (1 | seed)`` (``values``: one array of
    per-confusion values per seed); p None with a status saying why when it cannot be fitted.

    statsmodels' MixedLM (REML) on the values divided by their standard deviation (the test is
    scale-free, and Δd of order 1e-4 stalls the optimiser), ``optimisers`` tried in turn until one
    converges; the Wald statistic of the intercept is referred to t with (seeds - 1)
    degrees of freedom, the between-within df of an intercept-only model, because with a handful of
    seeds the normal reference would overstate the evidence."""
    if len(values) < 2:
        return None, ONE_SEED
    if max(len(v) for v in values) < 2:
        return None, NO_CONFUSIONS
    y = np.concatenate([np.asarray(v, np.float64) for v in values])
    if not np.all(np.isfinite(y)):
        return None, "non-finite values"
    scale = float(y.std())
    if not np.any(y != y[0]) or not 0 < scale < math.inf:
        return None, "degenerate (no variation)"
    groups = np.repeat(np.arange(len(values)), [len(v) for v in values])
    model = MixedLM(y / scale, np.ones((len(y), 1)), groups=groups)
    for method in optimisers:
        with warnings.catch_warnings():
            # boundary (zero between-seed variance) and convergence warnings: judged by ``converged``
            warnings.simplefilter("ignore")
            try:
                fit = model.fit(reml=True, method=method)
            except (np.linalg.LinAlgError, ValueError):
                continue
        t = float(np.asarray(fit.tvalues)[0])
        if fit.converged and math.isfinite(t):
            break
    else:
        return None, NOT_CONVERGED
    ref = stats.t(df=len(values) - 1)
    return float(2 * ref.sf(abs(t)) if alternative == "two-sided" else ref.sf(t)), "ok"


def across_seeds(
    values: Sequence[np.ndarray | Sequence[float]], alternative: Alternative, seed: int
) -> dict[str, Any]:
    """Seed-level inference on ``values`` (one array per seed: per-confusion values, or one number):

    ``n_seeds``, ``mean`` (mean of the seed means) with ``low``/``high`` (bootstrap over seeds), ``t`` and
    ``t_pvalue`` (one-sample t-test of the seed means), ``w_pvalue`` (Wilcoxon signed-rank of the seed
    means), ``mixed_pvalue`` (the mixed model), ``alternative`` and ``status`` (``ok`` or why a test is
    missing)."""
    arrays = [np.asarray(v, np.float64).ravel() for v in values]
    arrays = [v for v in arrays if v.size]
    means = np.array([v.mean() for v in arrays])
    m, lo, hi = mean_ci(means, seed)
    out: dict[str, Any] = {
        "n_seeds": len(means),
        "mean": m,
        "low": lo,
        "high": hi,
        "alternative": alternative,
        "t": None,
        "t_pvalue": None,
        "w_pvalue": None,
        "mixed_pvalue": None,
        "status": "ok",
    }
    if len(means) < 2:
        out["status"] = ONE_SEED
        return out
    notes = []
    if np.any(means != means[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t, t_p = _statistic_p(stats.ttest_1samp(means, 0.0, alternative=alternative))
            _, w_p = _statistic_p(stats.wilcoxon(means, alternative=alternative))
        out["t"], out["t_pvalue"], out["w_pvalue"] = _finite(t), _finite(t_p), _finite(w_p)
    else:  # every seed the same: a t-test would say p = 0 (or nan), which is no evidence
        notes.append("degenerate (no variation over seeds)")
    out["mixed_pvalue"], mixed_status = mixed_model(arrays, alternative)
    if mixed_status != "ok":
        notes.append(mixed_status)
    out["status"] = "; ".join(notes) or "ok"
    return out


def stouffer(pvalues: Sequence[float | None]) -> float | None:
    """Stouffer's combination of within-model p-values (each model equal weight), conditional on these
    models; None without any p-value."""
    ps = np.clip([p for p in pvalues if p is not None and math.isfinite(p)], 1e-300, 1 - 1e-16)
    return _statistic_p(stats.combine_pvalues(ps, method="stouffer"))[1] if len(ps) else None
