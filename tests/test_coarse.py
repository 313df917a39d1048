"""The Kronecker coarse-space preconditioner against the dense Hessian and dense solves."""

from __future__ import annotations

import pytest
import torch
from test_influence_eif import DT, make_problem
from test_influence_if import SIGNS
from test_methods import batch, problem

from eif.influence import ConfusionTask
from eif.influence.coarse import KroneckerCoarse
from eif.influence.hessian import HeadHessian
from eif.influence.ihvp import IfConfig
from eif.influence.krylov import pcg
from eif.influence.solvers import ConjugateGradients, Exact, exact_hessian
from eif.influence.task import head
from eif.methods.influence_function import InfluenceFunction
from eif.utils.errors import EifError


def _operator(pb, task=None, damping=0.0, **kwargs):
    z = head(pb["ftr"], pb["w"], pb["b"])
    dense = exact_hessian(HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"]))
    return HeadHessian(task or pb["task"], pb["ftr"], z, pb["ytr"], damping=damping, **kwargs), dense


@pytest.mark.parametrize("curvature", ["factors", "softmax", "autograd"])
def test_coarse_block_is_the_hessian_on_its_subspace(curvature):
    """H_S = Z^T H Z for the basis Z of {Psi A Phi^T}, through the cached curvature factors, the
    softmax closed form (no room for the factors) and double backprop alike, and the complement scale
    is lambda + H's mean eigenvalue off the subspace."""
    pb = make_problem(seed=11, n=50, d=7, e=5)
    task = ConfusionTask(train_loss=pb["task"].train_loss) if curvature == "autograd" else None
    op, dense = _operator(pb, task, **({"cache_floats": 50 * 3} if curvature == "softmax" else {}))
    assert op.form == curvature and (op.softmax is not None) == (curvature == "softmax")
    lam = 1.0 + max(0.0, -float(torch.linalg.eigvalsh(dense)[0]))
    pre = KroneckerCoarse.build(op, lam, rank_d=3, rank_e=4)
    psi, phi = pre.psi, pre.phi
    assert psi.shape == (5, 4) and phi.shape == (7, 3)
    torch.testing.assert_close(psi.T @ psi, torch.eye(4, dtype=DT), rtol=0, atol=1e-10)
    torch.testing.assert_close(phi.T @ phi, torch.eye(3, dtype=DT), rtol=0, atol=1e-10)
    # the feature side: the top eigenvectors of F^T F / N
    evals, evecs = torch.linalg.eigh(pb["ftr"].T @ pb["ftr"] / 50)
    overlap = (evecs[:, -3:].T @ phi).abs().sum(0)
    torch.testing.assert_close(overlap, torch.ones(3, dtype=DT), rtol=1e-8, atol=0)
    z_basis = torch.einsum("ej,dp->edjp", psi, phi).reshape(35, 12)  # (E D) x (q r), W row-major
    h_s = pre.factor @ pre.factor.T - lam * torch.eye(12, dtype=DT)
    torch.testing.assert_close(h_s, z_basis.T @ dense @ z_basis, rtol=1e-8, atol=1e-10)
    rest = (dense.trace() - h_s.trace()) / (35 - 12)
    assert pre.alpha == pytest.approx(lam + max(0.0, float(rest)), rel=1e-8)


def test_coarse_preconditioned_cg_solves_the_exact_system_in_fewer_steps():
    """Features with a low effective rank (as trunk features have): three strong directions of ten."""
    pb = make_problem(seed=5, n=80, d=10, e=6)
    g = torch.Generator().manual_seed(3)
    lift = torch.randn(3, 10, generator=g, dtype=DT)
    pb["ftr"] = 2 * torch.randn(80, 3, generator=g, dtype=DT) @ lift + 0.3 * pb["ftr"]
    pb["w"] = 2 * pb["w"]
    op, dense = _operator(pb)
    lam = 1e-2 + max(0.0, -float(torch.linalg.eigvalsh(dense)[0]))
    system = op.with_damping(lam)
    v = torch.randn(4, *pb["w"].shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    pre = KroneckerCoarse.build(op, lam, rank_d=3, rank_e=6)
    plain = pcg(system.matvec, v, lam, 1e-6, 500)
    coarse = pcg(system.matvec, v, lam, 1e-6, 500, precondition=pre.apply)
    assert coarse.iterations.max() < plain.iterations.min(), (coarse.iterations, plain.iterations)
    ref = torch.linalg.solve(dense + lam * torch.eye(60, dtype=DT), v.reshape(4, -1).T).T.view_as(v)
    tight = pcg(system.matvec, v, lam, 1e-12, 500, precondition=pre.apply)
    torch.testing.assert_close(tight.x, ref, rtol=1e-6, atol=1e-8)
    true = (system.matvec(tight.x) - v).flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1)
    assert (true < 1e-10).all()


def test_if_with_a_coarse_space_matches_the_exact_solver():
    pb = make_problem(seed=6, n=40)
    _, dense = _operator(pb)
    lam = 1.0 + max(0.0, -float(torch.linalg.eigvalsh(dense)[0]))
    p = problem(pb)
    exact = InfluenceFunction(solver=Exact(damping=lam)).score(p, batch(signs=SIGNS))
    cg = InfluenceFunction(solver=ConjugateGradients(damping=lam, tol=1e-10, coarse=3, coarse_e=2)).score(
        p, batch()
    )
    torch.testing.assert_close(cg.scores, exact.scores, rtol=1e-7, atol=1e-10)
    assert cg.arrays["residual"].max() <= 1e-10
    assert cg.info["coarse"]["rank_d"] == 3 and cg.info["coarse"]["rank_e"] == 2


def test_coarse_space_refuses_an_indefinite_system():
    pb = make_problem()  # H's smallest eigenvalue is about -1.3 here, on its top directions
    with pytest.raises(EifError, match="not positive definite"):
        InfluenceFunction(solver=ConjugateGradients(damping=0.05, coarse=6, coarse_e=4)).score(
            problem(pb), batch()
        )


def test_two_preconditioners_are_one_config_error():
    with pytest.raises(ValueError, match="two preconditioners"):
        IfConfig(solver=ConjugateGradients(damping=1.0, coarse=8, deflate=16))
