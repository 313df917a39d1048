# pyright: strict
"""Per-sample curvatures of the training loss in the embedding z: the blocks every IF solver builds on.

With z_i = W f_i + b, g_i = dL_i/dz_i (E,) and H_z,i = d^2 L_i/dz_i^2 (E, E). The Hessian of the mean
training loss in W is H X = mean_i (H_z,i X f_i) f_i^T (:mod:`eif.influence.hessian`). H_z,i comes
in three forms: factors B S B^T - sigma I on M + 2 columns for a loss with a cosine form
(:func:`curvature_factors`), applied term by term without any M x M matrix (:func:`curvature_apply`,
for many cosine targets), or dense by ``torch.func`` (:func:`curvature_z`, :func:`hvp_z`).
"""

from __future__ import annotations

import torch
from torch.func import grad, jvp, vmap

from eif.influence.softmax_curvature import SoftmaxCurvature
from eif.influence.task import ConfusionTask
from eif.losses.base import MetricLoss


def loss_grad_z(task: ConfusionTask, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g_i = dL_i/dz_i for all samples: z (N, E) -> (N, E) (losses are independent across samples)."""

    def total(q: torch.Tensor) -> torch.Tensor:
        return task.train_loss(q, y).sum()

    return grad(total)(z)


def hvp_z(task: ConfusionTask, z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """H_z,i t_ki for every i and k: z (N, E), y (N,), tangents t (K, N, E) -> (K, N, E).

    Double backprop on K independent copies of z (the losses are per-sample and batch-independent with
    fixed parameters, so copy (k, i) only sees its own row): two autograd calls, no per-k transform
    overhead.
    """
    with torch.enable_grad():
        zk = z.detach().expand(t.shape).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(task.train_loss(zk, y).sum(), zk, create_graph=True)
        (hv,) = torch.autograd.grad(g, zk, grad_outputs=t)
    return hv


def curvature_factors(
    loss: MetricLoss, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """H_z,i = B_i S_i B_i^T - sigma_i I for a loss with a cosine form: z (b, E), y (b,) ->
    (uq (b, E, 2), S (b, M+2, M+2), sigma (b,)), with B_i = [P^^T | u_i | q_i] (E, M+2).

    P^ (M, E) the loss's unit ``cosine_targets()``, c = P^ u, u = z/|z|, l(c) the per-sample loss in
    cosines, g = dl/dc, H_c = d^2 l/dc^2 (M, M) (``torch.func.hessian`` in M dims), q = P^^T g,
    s = g.c, Pi = I - u u^T. The chain rule through c with
    d^2 c_m/dz^2 = (3 c_m u u^T - c_m I - p_m u^T - u p_m^T) / |z|^2 gives
        H_z = (Pi P^^T H_c P^ Pi - q u^T - u q^T + 3 s u u^T - s I) / |z|^2,
    and Pi P^^T = P^^T - u c^T puts it on the basis B: S = [[H_c, -H_c c, 0], [-c^T H_c, c^T H_c c + 3 s,
    -1], [0, -1, 0]] / |z|^2, sigma = s / |z|^2. O(M^2) per sample.
    """
    pu = loss.cosine_targets()  # (M, E)
    m = pu.shape[0]

    def ell(cc: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return loss.per_sample_cos(cc[None], yy[None])[0]

    inv_r2 = 1.0 / z.pow(2).sum(-1)
    u = z * inv_r2.sqrt()[:, None]
    c = u @ pu.T  # (b, M)
    g = vmap(grad(ell))(c, y)
    hc = vmap(torch.func.hessian(ell))(c, y)  # (b, M, M)
    s = (g * c).sum(-1)
    hcc = (hc @ c[..., None])[..., 0]
    core = z.new_zeros(len(z), m + 2, m + 2)
    core[:, :m, :m] = hc
    core[:, :m, m] = -hcc
    core[:, m, :m] = -(c[:, None, :] @ hc)[:, 0]
    core[:, m, m] = (hcc * c).sum(-1) + 3 * s
    core[:, m, m + 1] = core[:, m + 1, m] = -1.0
    return torch.stack([u, g @ pu], -1), core * inv_r2[:, None, None], s * inv_r2


def curvature_apply(loss: MetricLoss, z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """H_z,i t_ik for a loss with a cosine form without forming any M x M matrix: z (b, E), y (b,),
    t (b, K, E) -> (b, K, E).

    The same H_z as :func:`curvature_factors` (its doc has the derivation), applied term by term:
    w = P^ Pi t (b, K, M), H_c w by forward-over-reverse differentiation of the per-sample loss in the
    M cosines, then Pi P^^T (H_c w) - q (u.t) - u (q.t) + 3 s u (u.t) - s t, over |z|^2. A loss with a
    softmax form (``cos_logit_scale()``) takes the closed form of
    :mod:`eif.influence.softmax_curvature` instead. O(K M E) per sample instead of O(M^2 (M + E)) to
    factor: the form for many cosine targets (InShop: 3,997 proxies), where the factors would need
    (M + 2)^2 floats per sample.
    """
    if loss.cos_logit_scale() is not None:
        return SoftmaxCurvature.build(loss, z, y).apply(slice(None), t)
    pu = loss.cosine_targets()  # (M, E)
    inv_r2 = 1.0 / z.pow(2).sum(-1)
    u = z * inv_r2.sqrt()[:, None]
    c = u @ pu.T  # (b, M)

    def ell(cc: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return loss.per_sample_cos(cc[None], yy[None])[0]

    def hess_c(cc: torch.Tensor, yy: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
        def grad_c(x: torch.Tensor) -> torch.Tensor:
            return grad(ell)(x, yy)

        return jvp(grad_c, (cc,), (ww,))[1]

    g = vmap(grad(ell))(c, y)  # (b, M)
    q = g @ pu  # (b, E)
    s = (g * c).sum(-1)  # (b,)
    ut = torch.einsum("bke,be->bk", t, u)
    qt = torch.einsum("bke,be->bk", t, q)
    w = t @ pu.T - c[:, None, :] * ut[..., None]  # P^ Pi t
    hw = vmap(vmap(hess_c, in_dims=(None, None, 0)))(c, y, w)  # (b, K, M)
    out = hw @ pu - u[:, None, :] * torch.einsum("bkm,bm->bk", hw, c)[..., None]  # Pi P^^T H_c w
    out -= q[:, None, :] * ut[..., None] + u[:, None, :] * qt[..., None]
    out += (3 * s)[:, None, None] * u[:, None, :] * ut[..., None] - s[:, None, None] * t
    return out * inv_r2[:, None, None]


def curvature_z(
    task: ConfusionTask, z: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The dense per-sample curvatures H_z,i = d^2 L_i / dz_i^2: z (B, E), y (B,) -> (B, E, E), into
    ``out``: from :func:`curvature_factors` for a loss with a cosine form (O(M E (M + E)) per sample),
    else by ``torch.func.hessian`` of the per-sample loss in z. Works in sub-chunks of ~2^24 floats."""
    b, e = z.shape
    out = z.new_empty(b, e, e) if out is None else out
    loss = task.cos_loss
    if loss is None:

        def per(q: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            return task.train_loss(q[None], yy[None])[0]

        step = max(1, (1 << 24) // (e * e * 4))
        for s0 in range(0, b, step):
            out[s0 : s0 + step] = vmap(torch.func.hessian(per))(z[s0 : s0 + step], y[s0 : s0 + step])
        return out
    pt = loss.cosine_targets().T  # (E, M)
    step = max(1, (1 << 24) // (e * (pt.shape[1] + 2)))
    for s0 in range(0, b, step):
        uq, core, sigma = curvature_factors(loss, z[s0 : s0 + step], y[s0 : s0 + step])
        basis = torch.cat([pt.expand(len(uq), -1, -1), uq], -1)  # (b, E, M+2)
        h = torch.matmul(basis @ core, basis.mT, out=out[s0 : s0 + len(uq)])
        h.diagonal(dim1=-2, dim2=-1).sub_(sigma[:, None])
    return out
