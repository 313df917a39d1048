"""IF diagnostics (eif/influence/diagnostics.py) against brute force: the stationarity ratio against
per-sample autograd gradients, the count of Hessian eigenvalues above the damping against a dense
eigendecomposition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_influence_eif import CONFUSIONS, make_problem
from test_influence_if import as_problem, dense_parts, operator, run

from eif.influence import IfConfig
from eif.influence.artifacts import Influence, write_analysis, write_index
from eif.influence.diagnostics import STATIONARITY_WARN, Stationarity, eigenvalues_above, stationarity
from eif.influence.ihvp import if_diagnostics
from eif.influence.solvers import ConjugateGradients, Exact, Lissa
from eif.influence.task import head
from eif.methods.influence_function import InfluenceFunction
from eif.stages.influence import diagnostics_lines


@pytest.mark.parametrize("seed", [0, 5])
def test_stationarity_ratio_is_the_per_sample_autograd_ratio(seed):
    pb = make_problem(seed=seed)
    grads, _, _, _ = dense_parts(pb, CONFUSIONS[:1], [1.0])  # (N, E*D), one autograd call per sample
    ref_mean, ref_each = float(grads.mean(0).norm()), float(grads.norm(dim=1).mean())
    got = stationarity(as_problem(pb))
    assert got.mean_gradient_norm == pytest.approx(ref_mean, rel=1e-10)
    assert got.mean_sample_gradient_norm == pytest.approx(ref_each, rel=1e-10)
    assert got.ratio == pytest.approx(ref_mean / ref_each, rel=1e-10)
    assert 0 < got.ratio < 1  # random heads are neither stationary nor all pulling one way


def test_stationarity_ratio_is_small_at_a_minimum():
    """Minimising the mean loss in W (bias fixed) drives the ratio towards 0."""
    pb = make_problem(seed=1)
    w = pb["w"].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = pb["task"].train_loss(head(pb["ftr"], w, pb["b"]), pb["ytr"]).mean()
        value.backward()
        return value

    before = stationarity(as_problem(pb)).ratio
    opt.step(closure)
    after = stationarity(as_problem({**pb, "w": w.detach()})).ratio
    assert before > 0.05 and after < 1e-3


@pytest.mark.parametrize("seed", [0, 2])
def test_eigenvalue_count_equals_dense_eigendecomposition(seed):
    pb = make_problem(seed=seed)
    _, hess, _, _ = dense_parts(pb, CONFUSIONS[:1], [1.0])
    eig = torch.linalg.eigvalsh(hess)  # ascending, E*D = 24 of them
    positive = eig[eig > 0]
    # thresholds midway between consecutive positive eigenvalues, so that rounding cannot flip a count
    thresholds = ((positive[1:] + positive[:-1]) / 2).tolist()
    z = head(pb["ftr"], pb["w"], pb["b"])
    hop = operator(pb["task"], pb, z)
    for lam in thresholds:
        got = eigenvalues_above(hop, lam, steps=len(hess))
        assert got["count"] == int((eig > lam).sum()), lam
        assert not got["saturated"] and got["lanczos_steps"] <= len(hess)
    assert float(eigenvalues_above(hop, thresholds[0], steps=len(hess))["highest"]) == pytest.approx(
        float(eig[-1]), rel=1e-8
    )
    # a damping below the whole spectrum with fewer steps than eigenvalues: every Ritz value (they lie
    # within the spectrum) is above it, so the count is only a lower bound, and it says so
    few = eigenvalues_above(hop, float(eig[0]) - 1.0, steps=2)
    assert few["saturated"] and few["count"] == 2 and few["next"] is None


def test_if_diagnostics_count_above_the_solvers_lambda_once_per_model():
    """The count is the dense one above each solver's lambda (LiSSA: scale * damping, scale: auto as the
    solve resolves it); IF's scores neither depend on it nor record it (it is the model's, computed once
    by ``InfluenceFunction.diagnose``); spectrum_steps = 0 turns it off."""
    pb = make_problem()
    problem = as_problem(pb)
    damping = 2.0
    _, hess, _, _ = dense_parts(pb, CONFUSIONS[:1], [1.0])
    eig = torch.linalg.eigvalsh(hess)
    for solver in (Exact(damping=damping), ConjugateGradients(damping=damping, tol=1e-10)):
        got = if_diagnostics(problem, IfConfig(solver=solver, spectrum_steps=24))
        assert got["eigenvalues_above_damping"]["count"] == int((eig > damping).sum())
        assert if_diagnostics(problem, IfConfig(solver=solver, spectrum_steps=0)) == {}
        on = run(pb, IfConfig(solver=solver, spectrum_steps=24))
        off = run(pb, IfConfig(solver=solver, spectrum_steps=0))
        assert torch.equal(on.scores, off.scores) and "eigenvalues_above_damping" not in on.info
        assert on.info["hessian_products"] == off.info["hessian_products"]
    fixed = if_diagnostics(problem, IfConfig(solver=Lissa(scale=200.0, damping=0.01), spectrum_steps=24))
    assert fixed["eigenvalues_above_damping"]["damping"] == pytest.approx(2.0)
    assert fixed["eigenvalues_above_damping"]["count"] == int((eig > damping).sum())
    auto = Lissa(scale="auto", damping=0.05)
    method = InfluenceFunction(solver=auto, spectrum_steps=24)
    lam = run(pb, method).info["damping_effective"]
    got = method.diagnose(problem)["eigenvalues_above_damping"]
    assert got["damping"] == lam and got["count"] == int((eig > lam).sum())


def _artifact(tmp_path, ratio_num: float, ratio_den: float, count: int):
    scores = np.array([[0.5, -1.0, 0.0]])
    eig = {
        "count": count,
        "damping": 5.0,
        "lanczos_steps": 32,
        "saturated": False,
        "highest": 40.0,
        "next": 1.0,
    }
    entries = [
        write_analysis(tmp_path, kind, m, scores, np.zeros(1), [np.array([[0, 1]])], {}, {}, 1.0)
        for kind in ("pair", "group")
        for m in ("if", "eif")
    ]
    methods = {"if": {"eigenvalues_above_damping": eig}, "eif": {}}
    write_index(tmp_path, entries, 3, {}, Stationarity(ratio_num, ratio_den).record() | {"methods": methods})
    return Influence(tmp_path)


def test_publish_lines_name_the_ratio_the_count_and_warn_only_when_far(tmp_path):
    far = _artifact(tmp_path / "far", 3.0, 10.0, 12)
    summary, note = diagnostics_lines(far)
    assert (
        summary is not None
        and "0.3" in summary
        and "if: 12 Hessian eigenvalues above the damping 5" in summary
    )
    assert summary.count("Hessian eigenvalues") == 1  # once per IF method, not per kind
    assert note is not None and f"> {STATIONARITY_WARN:g}" in note
    near = _artifact(tmp_path / "near", 0.5, 10.0, 3)
    summary, note = diagnostics_lines(near)
    assert summary is not None and "0.05" in summary and note is None
    assert near.diagnostics["stationarity_ratio"] == pytest.approx(0.05)
