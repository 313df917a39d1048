# pyright: strict
"""Per-sample curvatures H_z,i in closed form for a softmax-form cosine loss (ProxyNCA++, ProxyNCA,
NormalizedSoftmax, CosFace: ``MetricLoss.cos_logit_scale()`` = a).

With u = z/|z|, unit targets P^ (M, E), cosines c = P^ u, softmax probabilities p (M), the loss's
gradient in the cosines is g = a (p - e_y) and its curvature H_c = a^2 (diag p - p p^T). Put into the
chain rule of :func:`eif.influence.ihvp.curvature_factors` (Pi = I - u u^T, q = P^^T g, s = g.c), the
only part that is not rank one is A = P^^T diag(p) P^ (E, E); with m = P^^T p, m_c = P^^T (p * c) = A u,
p_c = p.c = u.m and p_cc = p.c^2 = u.A u:

    |z|^2 H_z = a^2 (A - u m_c^T - m_c u^T + p_cc u u^T - (Pi m)(Pi m)^T) - q u^T - u q^T + 3 s u u^T - s I,
    Pi m = m - p_c u.

So a product H_z t costs two GEMMs with the targets (t P^^T, then its p-weighted rows times P^) and
O(E) work per direction, with no autograd and one pass over the (n, K, M) temporary; the compressed
curvature Psi^T H_z Psi needs Psi^T A Psi = sum_m p_m (P^ Psi)_m (P^ Psi)_m^T (O(M q^2) per sample) and
a weighted mean of H_z over samples needs A only through P^^T diag(sum_i w_i p_i) P^ (one M x E^2 product
in all). ``tests/test_influence_if.py`` checks all three against autograd Hessians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import grad, vmap

from eif.losses.base import MetricLoss

Index = slice | torch.Tensor
BLOCK_FLOATS = 1 << 22  # floats per (rows, q, M) temporary of the compressed curvature


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a_i b_i^T for rows a (n, x), b (n, y) -> (n, x, y)."""
    return a[:, :, None] * b[:, None, :]


@dataclass
class SoftmaxCurvature:
    """The per-sample statistics of the closed form (module doc) for n samples: ``targets`` P^ (M, E),
    ``a`` the logit scale, ``p`` (n, M), ``u``, ``q``, ``m``, ``mc`` (n, E), ``s``, ``pc``, ``pcc``,
    ``inv_r2`` = 1/|z|^2 (n,)."""

    targets: torch.Tensor
    a: float
    p: torch.Tensor
    u: torch.Tensor
    q: torch.Tensor
    m: torch.Tensor
    mc: torch.Tensor
    s: torch.Tensor
    pc: torch.Tensor
    pcc: torch.Tensor
    inv_r2: torch.Tensor

    @staticmethod
    def build(loss: MetricLoss, z: torch.Tensor, y: torch.Tensor, chunk: int = 1024) -> SoftmaxCurvature:
        """The statistics of z (n, E), labels y (n,) for ``loss`` (which must have a softmax form): three
        (n, E) x (E, M) GEMMs (c, m, m_c; q = a (m - P^_y) needs none), in chunks of ``chunk`` rows."""
        a = loss.cos_logit_scale()
        if a is None:
            raise ValueError(f"{type(loss).__name__} has no softmax form (cos_logit_scale() is None)")
        pu = loss.cosine_targets().detach()  # (M, E); influence never moves the targets

        def ell(cc: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            return loss.per_sample_cos(cc[None], yy[None])[0]

        inv_r2 = 1.0 / z.pow(2).sum(-1)
        u = z * inv_r2.sqrt()[:, None]
        p = z.new_empty(len(z), pu.shape[0])
        m, mc = torch.empty_like(z), torch.empty_like(z)
        pc, pcc = z.new_empty(len(z)), z.new_empty(len(z))
        for s0 in range(0, len(z), chunk):
            rows = slice(s0, s0 + chunk)
            c = u[rows] @ pu.T  # (b, M)
            pb = vmap(grad(ell))(c, y[rows]).div_(a)  # g / a = p - e_y
            pb[torch.arange(len(c), device=c.device), y[rows]] += 1.0
            p[rows] = pb
            m[rows] = pb @ pu
            pb_c = pb * c
            mc[rows] = pb_c @ pu
            pc[rows] = pb_c.sum(-1)
            pcc[rows] = (pb_c * c).sum(-1)
        q = a * (m - pu[y])
        s = a * (pc - (u * pu[y]).sum(-1))  # g.c = a (p.c - c_y)
        return SoftmaxCurvature(pu, float(a), p, u, q, m, mc, s, pc, pcc, inv_r2)

    def apply(self, idx: Index, t: torch.Tensor) -> torch.Tensor:
        """H_z,i t for the samples ``idx`` (n of them): t (n, K, E) -> (n, K, E)."""
        p, u, q, m, mc = self.p[idx], self.u[idx], self.q[idx], self.m[idx], self.mc[idx]
        s, pc, inv_r2 = self.s[idx], self.pc[idx], self.inv_r2[idx]
        ut, qt, mt = (torch.bmm(t, v[:, :, None])[..., 0] for v in (u, q, m))  # (n, K)
        pw = mt - pc[:, None] * ut  # (Pi m).t
        out = (t @ self.targets.T).mul_(p[:, None, :]) @ self.targets  # A t
        out -= mc[:, None, :] * ut[..., None] + m[:, None, :] * pw[..., None]
        out -= u[:, None, :] * torch.bmm(out, u[:, :, None])  # Pi (A t - m_c (u.t) - m (Pi m).t)
        out *= self.a**2
        out -= q[:, None, :] * ut[..., None] + u[:, None, :] * qt[..., None]
        out += u[:, None, :] * ((3 * s)[:, None] * ut)[..., None] - s[:, None, None] * t
        return out.mul_(inv_r2[:, None, None])

    def compressed(self, idx: Index, psi: torch.Tensor) -> torch.Tensor:
        """Psi^T H_z,i Psi for the samples ``idx`` (n of them): psi (E, q) -> (n, q, q)."""
        pp = self.targets @ psi  # (M, q)
        ub, qb, mb, mcb = (v[idx] @ psi for v in (self.u, self.q, self.m, self.mc))  # (n, q)
        s, pc, pcc = self.s[idx], self.pc[idx], self.pcc[idx]
        p = self.p[idx]
        out = p.new_empty(len(p), pp.shape[1], pp.shape[1])
        step = max(1, BLOCK_FLOATS // pp.numel())
        for j in range(0, len(p), step):  # Psi^T A Psi (n, q, q), through (step, q, M) temporaries
            torch.matmul(pp.T * p[j : j + step, None, :], pp, out=out[j : j + step])
        pim = mb - pc[:, None] * ub  # Psi^T Pi m
        out -= _outer(ub, mcb) + _outer(mcb, ub) - pcc[:, None, None] * _outer(ub, ub) + _outer(pim, pim)
        out *= self.a**2
        out -= _outer(ub, qb) + _outer(qb, ub) - (3 * s)[:, None, None] * _outer(ub, ub)
        out.diagonal(dim1=-2, dim2=-1).sub_(s[:, None])
        return out.mul_(self.inv_r2[idx][:, None, None])

    def weighted_sum(self, idx: Index, w: torch.Tensor) -> torch.Tensor:
        """sum_i w_i H_z,i over the samples ``idx`` with weights w (n,): (E, E), in float64."""
        d = torch.float64
        wt = w.to(d) * self.inv_r2[idx].to(d)
        u, q, mc = self.u[idx].to(d), self.q[idx].to(d), self.mc[idx].to(d)
        s, pc, pcc = self.s[idx].to(d), self.pc[idx].to(d), self.pcc[idx].to(d)
        pim = self.m[idx].to(d) - pc[:, None] * u
        pu = self.targets.to(d)
        a2 = self.a**2
        out = a2 * (pu.T * (wt @ self.p[idx].to(d))) @ pu  # a^2 P^^T diag(sum_i w_i p_i) P^
        # each rank-one term x y^T summed over the samples: X^T diag(coef) Y
        cross = (u * (wt * a2)[:, None]).T @ mc + (q * wt[:, None]).T @ u  # u m_c^T and q u^T terms
        out -= cross + cross.T
        out += (u * (wt * (a2 * pcc + 3 * s))[:, None]).T @ u - a2 * (pim * wt[:, None]).T @ pim
        out.diagonal().sub_(float((wt * s).sum()))
        return out
