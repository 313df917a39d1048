"""Attribution methods, the Hessian operator and the Krylov solvers against plain implementations.

Every method's scores are compared with a direct computation from dense per-sample autograd on a
small float64 problem, and every method keeps the sign convention (positive = harmful) on the
hand-made case where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from test_influence_eif import CONFUSIONS, DT, make_problem, sign_case
from test_influence_if import SIGNS, dense_parts

from eif.influence import ConfusionTask, build_batch
from eif.influence.hessian import HeadHessian
from eif.influence.ihvp import IfConfig, classic_influence
from eif.influence.krylov import lanczos, pcg
from eif.influence.solvers import ConjugateGradients, Exact, Lissa, exact_hessian
from eif.influence.task import head
from eif.methods.base import AttributionProblem
from eif.methods.eif import Eif
from eif.methods.grad_cos import GradCos
from eif.methods.grad_dot import GradDot
from eif.methods.influence_function import InfluenceFunction
from eif.methods.random import Random
from eif.methods.representer import Representer, fit_regularised_head
from eif.utils.errors import EifError


def problem(pb) -> AttributionProblem:
    return AttributionProblem(pb["task"], pb["ftr"], pb["ytr"], pb["w"], pb["b"], pb["fte"])


def batch(pairs=CONFUSIONS, signs=SIGNS):
    return build_batch(pairs, signs, dtype=torch.float64)


@pytest.mark.parametrize("cos_form", [True, False])
def test_head_hessian_is_the_dense_hessian(cos_form):
    pb = make_problem(seed=2, n=40)
    task = pb["task"] if cos_form else ConfusionTask(train_loss=pb["task"].train_loss)
    z = head(pb["ftr"], pb["w"], pb["b"])
    dense = exact_hessian(HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"]))
    op = HeadHessian(task, pb["ftr"], z, pb["ytr"], damping=0.7)
    x = torch.randn(3, *pb["w"].shape, generator=torch.Generator().manual_seed(0), dtype=DT)
    ref = (x.reshape(3, -1) @ dense.T + 0.7 * x.reshape(3, -1)).view_as(x)
    torch.testing.assert_close(op.matvec(x), ref, rtol=1e-9, atol=1e-11)
    assert op.products == 3


def test_lanczos_finds_the_spectrum():
    pb = make_problem(seed=3, n=50)
    z = head(pb["ftr"], pb["w"], pb["b"])
    dense = exact_hessian(HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"]))
    evals = torch.linalg.eigvalsh(dense)
    op = HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"])
    full = lanczos(op.matvec, tuple(pb["w"].shape), steps=dense.shape[0], keep=5, dtype=DT)
    torch.testing.assert_close(full.values, evals.flip(0)[:5], rtol=1e-8, atol=1e-10)
    assert full.lowest == pytest.approx(float(evals[0]), abs=1e-8)
    # a short run already gets the top of the spectrum well (what the preconditioner needs)
    short = lanczos(op.matvec, tuple(pb["w"].shape), steps=12, keep=2, dtype=DT)
    top = scipy.sparse.linalg.eigsh(dense.numpy(), k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(short.values.numpy()), np.sort(top), rtol=1e-3)
    # Ritz vectors are orthonormal eigenvector estimates: H u = theta u
    u = full.vectors[:1]
    torch.testing.assert_close(op.matvec(u), full.values[0] * u, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("deflate", [0, 14])
def test_pcg_solves_every_system(deflate):
    pb = make_problem(seed=4, n=60)
    z = head(pb["ftr"], pb["w"], pb["b"])
    h = exact_hessian(HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"]))
    lam = 0.5 + max(0.0, -float(torch.linalg.eigvalsh(h)[0]))  # positive definite, not by much
    dense = h + lam * torch.eye(24, dtype=DT)
    op = HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"], damping=lam)
    v = torch.randn(5, *pb["w"].shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    spec = None
    if deflate:
        spec = lanczos(op.with_damping(0).matvec, tuple(pb["w"].shape), steps=deflate, keep=7, dtype=DT)
    sol = pcg(op.matvec, v, lam, 1e-10, 200, spec)
    ref = torch.linalg.solve(dense, v.reshape(5, -1).T).T.view_as(v)
    torch.testing.assert_close(sol.x, ref, rtol=1e-7, atol=1e-9)
    true = (op.matvec(sol.x) - v).flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1)
    assert (sol.residual <= 1e-10).all() and (true < 1e-8).all()


def test_deflation_cuts_iterations_on_an_ill_conditioned_head():
    pb = make_problem(seed=5, n=80, d=10, e=6)
    pb["w"] = 4 * pb["w"]  # sharper softmax: a spread-out spectrum
    z = head(pb["ftr"], pb["w"], pb["b"])
    h = exact_hessian(HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"]))
    lam = 1e-2 + max(0.0, -float(torch.linalg.eigvalsh(h)[0]))
    op = HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"], damping=lam)
    v = torch.randn(4, *pb["w"].shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    spec = lanczos(op.with_damping(0).matvec, tuple(pb["w"].shape), steps=40, keep=20, dtype=DT)
    plain, deflated = pcg(op.matvec, v, lam, 1e-6, 500), pcg(op.matvec, v, lam, 1e-6, 500, spec)
    assert deflated.iterations.max() < plain.iterations.min(), (deflated.iterations, plain.iterations)
    ref = torch.linalg.solve(h + lam * torch.eye(60, dtype=DT), v.reshape(4, -1).T).T.view_as(v)
    torch.testing.assert_close(pcg(op.matvec, v, lam, 1e-12, 500, spec).x, ref, rtol=1e-6, atol=1e-8)


def test_if_records_the_residual_of_its_own_system():
    """LiSSA's residual is measured on (H + scale * damping I) x = v, the system it converges to; exact
    solves it to round-off; cg to its tolerance. Compared with a dense computation."""
    pb = make_problem(seed=6, n=30)
    grads, hess, v, _ = dense_parts(pb, CONFUSIONS, SIGNS)
    p = problem(pb)
    lam = 1.0 + max(0.0, -float(torch.linalg.eigvalsh(hess)[0]))  # H + lam I positive definite
    for cfg in (
        InfluenceFunction(solver=Lissa(scale=50.0, damping=lam / 50, block_size=8)),
        InfluenceFunction(solver=Exact(damping=lam)),
        InfluenceFunction(solver=ConjugateGradients(damping=lam, tol=1e-4)),
    ):
        r = cfg.score(p, batch())
        x = torch.linalg.lstsq(grads, r.scores.T).solution.T  # the solve, recovered from the scores
        dense_res = (x @ (hess + lam * torch.eye(24, dtype=DT)) - v).norm(dim=1) / v.norm(dim=1)
        torch.testing.assert_close(r.arrays["residual"], dense_res, rtol=1e-6, atol=1e-9)
        assert r.info["damping_effective"] == pytest.approx(lam)
    assert r.arrays["residual"].max() <= 1e-4
    lissa = InfluenceFunction(solver=Lissa(scale=50.0, damping=lam / 50)).score(p, batch())
    assert lissa.info["residual_median"] > 1e-3  # 30 steps are far from the fixed point
    curv = lissa.info["curvature"]
    assert curv["n"] == 30 and 0 <= curv["above_2_scale"] <= 30 and curv["max"] > 0


def test_converged_if_refuses_an_indefinite_system():
    pb = make_problem()  # H's smallest eigenvalue is about -1.3 here
    with pytest.raises(EifError, match="not positive definite: H's smallest eigenvalue is about -1"):
        InfluenceFunction(solver=ConjugateGradients(damping=0.5, deflate=24)).score(problem(pb), batch())


def test_grad_dot_and_cos_equal_dense_gradients():
    pb = make_problem(seed=7)
    grads, _, v, _ = dense_parts(pb, CONFUSIONS, SIGNS)
    dot = GradDot(k_chunk=3).score(problem(pb), batch())
    torch.testing.assert_close(dot.scores, v @ grads.T, rtol=1e-9, atol=1e-12)
    cos = GradCos(k_chunk=2).score(problem(pb), batch())
    ref = (v @ grads.T) / (v.norm(dim=1)[:, None] * grads.norm(dim=1)[None])
    torch.testing.assert_close(cos.scores, ref, rtol=1e-9, atol=1e-12)
    assert cos.scores.abs().max() <= 1 + 1e-12


def test_representer_equals_its_decomposition():
    """W* is stationary (W* = W0 + sum alpha_i f_i^T); the score of sample i is the first-order change
    of the objective when its term alpha_i f_i^T leaves W*, computed here sample by sample."""
    pb = make_problem(seed=8, n=40)
    cfg = Representer(l2=0.5, iters=300)
    p = problem(pb)
    r = cfg.score(p, batch())
    assert r.info["stationarity_gap"] < 1e-6
    w_star = fit_regularised_head(p, cfg.l2, cfg.iters)
    task, ftr, ytr, b, fte = pb["task"], pb["ftr"], pb["ytr"], pb["b"], pb["fte"]
    ref = torch.zeros(len(CONFUSIONS), len(ftr), dtype=DT)
    for k, (pairs, sign) in enumerate(zip(CONFUSIONS, SIGNS)):
        for i in range(len(ftr)):
            zi = head(ftr[i : i + 1], w_star, b).requires_grad_(True)
            (gi,) = torch.autograd.grad(task.train_loss(zi, ytr[i : i + 1]).sum(), zi)
            alpha = -gi[0] / (2 * cfg.l2 * len(ftr))
            term = torch.outer(alpha, ftr[i])  # sample i's part of W* - W0
            wr = w_star.clone().requires_grad_(True)
            obj = sign * torch.stack(
                [task.measurement(head(fte[a], wr, b), head(fte[c], wr, b)) for a, c in pairs]
            )
            (gw,) = torch.autograd.grad(obj.mean(), wr)
            ref[k, i] = -(gw * term).sum()  # the objective's change when the term leaves W*
    torch.testing.assert_close(r.scores, ref, rtol=1e-6, atol=1e-10)


def test_random_is_seeded_and_ignores_the_model():
    pb = make_problem(seed=9)
    a = Random(seed=3).score(problem(pb), batch())
    pb["w"] = 2 * pb["w"]
    b = Random(seed=3).score(problem(pb), batch())
    torch.testing.assert_close(a.scores, b.scores)
    assert not torch.equal(a.scores, Random(seed=4).score(problem(pb), batch()).scores)


def test_eif_method_is_empirical_influence():
    from eif.influence.eif import empirical_influence

    pb = make_problem(seed=10)
    cfg = Eif(lr=0.05, max_steps=10)
    r = cfg.score(problem(pb), batch())
    ref = empirical_influence(problem(pb), batch(), cfg)
    torch.testing.assert_close(r.scores, ref.scores)
    torch.testing.assert_close(r.arrays["delta_d"], ref.delta_d)


@pytest.mark.parametrize(
    "method",
    [
        Eif(),
        InfluenceFunction(solver=Exact(damping=1.0)),
        InfluenceFunction(solver=ConjugateGradients(damping=1.0, deflate=4)),
        GradDot(),
        GradCos(),
        Representer(l2=0.01),
    ],
    ids=lambda m: type(m).__name__ + ("" if not hasattr(m, "solver") else f"-{m.solver.kind}"),
)
def test_every_method_keeps_the_sign_convention(method):
    task, ftr, ytr, w, b, fte = sign_case()
    p = AttributionProblem(task, ftr, ytr, w, b, fte)
    r = method.score(p, build_batch([np.array([[0, 1]])], dtype=torch.float64))
    assert r.scores[0, 0] > 0 > r.scores[0, 1]  # x1 pulls the pair together: harmful; x2 helpful


def test_classic_influence_default_config_runs():
    pb = make_problem(seed=11, n=200)
    res = classic_influence(
        problem(pb),
        batch(),
        IfConfig(solver=Lissa(scale="auto", block_size=32)),
    )
    assert torch.isfinite(res.scores).all() and res.info["curvature"]["above_2_scale"] == 0
