# pyright: strict
"""Classic influence functions (paper Eq. 4; docs/protocol.md, IF) on cached features, batched over K.

score_i = grad_W obj^T H^-1 grad_W L_i, obj = sign * d, H the Hessian of the mean training loss
w.r.t. the head weight W. This is the paper's Eq. 4 with the sign **flipped**, so that, as for EIF,
**positive = harmful** (up-weighting sample i would pull a confusion pair closer). The reference's
IF code reports the opposite sign.

Structure used everywhere: with z_i = W f_i + b, grad_W L_i = g_i f_i^T (g_i = dL_i/dz_i), the
per-sample Hessian is H_i V = (H_z,i V f_i) f_i^T (:mod:`eif.influence.curvature`; the operator
H + lambda I is :class:`eif.influence.hessian.HeadHessian`), grad_W obj_k = G_k^T F_p,k, and
score_ki = g_i^T (X_k f_i), X_k = (H + lambda I)^-1 grad_W obj_k from the configured solver
(:mod:`eif.influence.solvers`).

Every result records how well its linear system was solved: the relative residual
|(H + lambda I) x - v| / |v| per confusion, with lambda the damping of the system the solver
converges to (cg's recurrence gives it for free; for the others it is one more product with H, whose
first GEMM F X^T is the one the scores read, so it is computed once for both); LiSSA also records its
per-sample curvatures |H_i|_2 against 2 * scale (above it the recursion is not a contraction for
that sample). How many eigenvalues of H exceed lambda does not depend on the confusions:
:func:`if_diagnostics` estimates it once per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from eif.influence.confusion import ConfusionBatch
from eif.influence.curvature import loss_grad_z
from eif.influence.diagnostics import eigenvalues_above
from eif.influence.hessian import HeadHessian
from eif.influence.problem import AttributionProblem
from eif.influence.solvers import AnySolver, Lissa
from eif.influence.torch_typed import norm
from eif.settings import DISPLAY, SPEED, Settings, setting

# Floats of the (rows, K E) block of F X^T that the scores and the residual share (128 MiB).
SHARED_FLOATS = 1 << 25


class IfConfig(Settings):
    """``if`` settings: the ``solver`` of (H + lambda I) x = v with its own settings
    (:mod:`eif.influence.solvers`), ``k_chunk`` confusions solved together and ``score_chunk``
    training samples per scoring GEMM. A median relative residual above ``warn_residual`` prints one
    warning line. ``spectrum_steps`` Lanczos steps (products with H) estimate how many eigenvalues of H
    exceed lambda, once per model (:func:`if_diagnostics`; 0: not estimated); scores do not depend on it."""

    solver: AnySolver = Lissa()
    spectrum_steps: NonNegativeInt = 32
    warn_residual: PositiveFloat = setting(1e-2, unkeyed=DISPLAY)
    k_chunk: PositiveInt = setting(100, unkeyed=SPEED)
    score_chunk: PositiveInt = setting(256, unkeyed=SPEED)


@dataclass
class IfResult:
    """``scores`` (K, N); ``d0`` (K,); ``iterations`` (K,) solver iterations (lissa: N steps);
    ``residual`` (K,) relative residual |(H + lambda I) x - v| / |v| of the system the solver targets;
    ``scale`` the LiSSA scale used (``scale: auto`` resolved; nan otherwise); ``info`` diagnostics
    (lambda, residual summary, a preconditioner's spectrum, LiSSA's per-sample curvatures against
    2 * scale)."""

    scores: torch.Tensor
    d0: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    scale: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict[str, Any])


def _scores(
    x: torch.Tensor,
    features: torch.Tensor,
    gz: torch.Tensor,
    chunk: int,
    system: HeadHessian | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """score_ki = g_i^T (X_k f_i): X (K, E, D), features (N, D), gz (N, E) -> (K, N), chunked over N;
    with a ``system``, also (H + lambda I) X (K, E, D) from the same F X^T.

    Per chunk one GEMM f X^T into a reused buffer (no fresh allocation per chunk) and one batched
    matvec with g_i that reads it. For the product, blocks of such chunks (about ``SHARED_FLOATS``)
    then get H_z,i applied in place and are accumulated by one GEMM each into (K E, D)."""
    k, e, dim = x.shape
    n = len(features)
    x_flat = x.reshape(k * e, dim)
    out = x.new_empty(n, k)
    rows = chunk if system is None else chunk * max(1, SHARED_FLOATS // (chunk * k * e))
    buf = x.new_empty(min(rows, n) * k * e)
    acc = None if system is None else x.new_zeros(k * e, dim)
    for s0 in range(0, n, rows):
        f0 = features[s0 : s0 + rows]
        t = buf[: len(f0) * k * e].view(len(f0), k * e)
        for s in range(0, len(f0), chunk):
            f = f0[s : s + chunk]
            xf = torch.mm(f, x_flat.T, out=t[s : s + len(f)])
            a = s0 + s
            torch.bmm(xf.view(len(f), k, e), gz[a : a + len(f), :, None], out=out[a : a + len(f), :, None])
        if system is not None and acc is not None:
            system.curvature_rows(s0, t)
            acc.addmm_(t.T, f0)
    if system is None or acc is None:
        return out.T, None
    acc.div_(n)
    if system.damping:
        acc.add_(x_flat, alpha=system.damping)
    system.counter[0] += k
    return out.T, acc.view_as(x)


def _relative_residual(hx: torch.Tensor, g: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """|(H + lambda I) X - V| / |V| (K,) for V = G^T F_p (never formed), from hx = (H + lambda I) X;
    |V|_F^2 = sum_rs (G G^T)_rs (F_p F_p^T)_rs. Overwrites hx."""
    diff = hx.baddbmm_(g.transpose(1, 2), fp, alpha=-1.0)
    vnorm = ((g @ g.mT) * (fp @ fp.mT)).sum((1, 2)).clamp_min(0).sqrt()
    return norm(diff.flatten(1), dim=1) / vnorm.clamp_min(1e-30)


def classic_influence(
    problem: AttributionProblem, batch: ConfusionBatch, cfg: IfConfig | None = None, progress: bool = False
) -> IfResult:
    """IF scores (K, N) for all confusions of ``batch`` with ``cfg.solver``, and how well each linear
    system was solved (see the module doc)."""
    cfg = IfConfig() if cfg is None else cfg
    p = problem
    cfg.solver.check(p.weight)
    z = p.train_embeddings()
    gz = loss_grad_z(p.task, z, p.train_labels)  # (N, E)
    hess = HeadHessian(p.task, p.train_features, z, p.train_labels)
    info: dict[str, Any] = {"solver": cfg.solver.kind}
    prepared = cfg.solver.prepare(hess, info)
    lam = prepared.lam
    system = hess.with_damping(lam)
    info["damping_effective"] = lam
    scores: list[torch.Tensor] = []
    d0s: list[torch.Tensor] = []
    iters: list[torch.Tensor] = []
    residuals: list[torch.Tensor] = []
    for start in range(0, len(batch), max(1, int(cfg.k_chunk))):
        sub = batch.select(slice(start, start + int(cfg.k_chunk)))
        d0, g, fp = p.objective_gradients(sub)  # g: the gradient of the objective sign * d
        solved = prepared.solve(g, fp, progress)
        shared = None if solved.residual is not None else system
        score, hx = _scores(solved.x, p.train_features, gz, int(cfg.score_chunk), shared)
        res = solved.residual if hx is None else _relative_residual(hx, g, fp)
        assert res is not None
        scores.append(score)
        d0s.append(d0)
        iters.append(solved.iterations.cpu())
        residuals.append(res.cpu())
    residual = torch.cat(residuals)
    info.update(
        residual_median=float(residual.median()),
        residual_max=float(residual.max()),
        iterations_median=float(torch.cat(iters).float().median()),
        hessian_products=hess.products,
        curvature_form=hess.form,
    )
    return IfResult(torch.cat(scores), torch.cat(d0s), torch.cat(iters), residual, prepared.scale, info)


def if_diagnostics(problem: AttributionProblem, cfg: IfConfig | None = None) -> dict[str, Any]:
    """Facts about IF with ``cfg`` on this trained head, whatever the confusions (computed once per model
    and method): ``eigenvalues_above_damping``, the estimated number of eigenvalues of H above the
    solver's lambda (:func:`eif.influence.diagnostics.eigenvalues_above`, ``cfg.spectrum_steps``
    products with H); empty when ``spectrum_steps`` is 0."""
    cfg = IfConfig() if cfg is None else cfg
    if not cfg.spectrum_steps:
        return {}
    p = problem
    cfg.solver.check(p.weight)
    hess = HeadHessian(p.task, p.train_features, p.train_embeddings(), p.train_labels)
    return {"eigenvalues_above_damping": eigenvalues_above(hess, cfg.solver.lam(hess), cfg.spectrum_steps)}
