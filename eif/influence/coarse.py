# pyright: strict
"""A Kronecker coarse-space preconditioner for (H + lambda I) X = V on the head weight W (E, D).

H X = mean_i H_z,i X f_i f_i^T (:mod:`eif.influence.hessian`). Its large eigenvalues are many (on a
trained CUB-shaped head, 45 of the Ritz values of 200 Lanczos steps exceed lambda = 5), so deflating a
few dozen Ritz pairs barely helps, but they live on few directions on each side:

- feature side: the top eigenvectors Phi (D, r) of the second moment F^T F / N (trunk features have a
  low effective rank);
- embedding side: the top eigenvectors Psi (E, q), by |eigenvalue|, of the mean per-sample curvature
  weighted by |f_i|^2 (estimated on up to ``probe`` evenly spaced samples).

On the subspace S = {Psi A Phi^T : A (q, r)} the operator is a dense (q r) x (q r) matrix,
    H_S = mean_i (a_i a_i^T) kron (Psi^T H_z,i Psi),   a_i = Phi^T f_i,
built once from the per-sample curvatures applied to the q columns of Psi (no product with H, no
(E D)-sized work), and factored by Cholesky. The preconditioner is two-level and additive:

    M^-1 R = Psi (H_S + lambda I)^-1[Psi^T R Phi] Phi^T + (R - Psi Psi^T R Phi Phi^T) / alpha,

exact on S and a scalar on the rest, alpha = lambda + the mean eigenvalue of H on the rest (the
trace of H, estimated on the probe samples, minus that of H_S, over the dimensions left). Because
Phi diagonalises F^T F, the two parts of H are coupled only through the variation of H_z,i across
samples, so one coarse solve per conjugate-gradient step captures most of the spectrum.

M^-1 is symmetric positive definite whenever H_S + lambda I is, so conjugate gradients still converge
to the exact system. H_S + lambda I failing Cholesky proves H + lambda I indefinite (H_S's eigenvalues
lie within H's), which is reported as an error.

No library offers this (scipy and kronfluence have K-FAC-type factorisations, not a Galerkin block
on a Kronecker subspace of a per-sample-curvature Hessian); ``tests/test_coarse.py`` checks H_S
against the dense Hessian and the solves against dense ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from eif.influence.hessian import APPLY_FLOATS, HeadHessian
from eif.influence.torch_typed import cholesky_ex, eigh, eigvalsh, unique
from eif.utils.errors import EifError


def _embedding_basis(hess: HeadHessian, q: int, probe: int) -> tuple[torch.Tensor, float]:
    """Psi (E, q): the top-|eigenvalue| eigenvectors of C = mean_i |f_i|^2 H_z,i over <= ``probe``
    evenly spaced samples, and tr(C), an estimate of the trace of H."""
    n, e = hess.n, hess.e
    idx = unique(torch.linspace(0, n - 1, min(n, probe)).round().long())
    eye = torch.eye(e, dtype=hess.z.dtype, device=hess.z.device)
    weight = hess.features.pow(2).sum(-1).double()
    if hess.softmax is not None:  # closed form: sum_i w_i H_z,i without any per-sample E x E matrix
        total = hess.softmax.weighted_sum(idx, weight[idx])
    else:
        total = torch.zeros(e, e, dtype=torch.float64, device=hess.z.device)
        m = e if hess.pu is None else max(e, hess.pu.shape[0])
        step = max(1, APPLY_FLOATS // (e * m))
        for j in range(0, len(idx), step):  # E x E curvatures: H_z,i applied to the E unit directions
            rows = idx[j : j + step]
            hz = hess.curvature_at(rows, eye.expand(len(rows), e, e))
            total += torch.einsum("b,bef->ef", weight[rows], hz.double())
    total = (total + total.T) / (2 * len(idx))
    trace = float(total.trace())
    if q >= e:
        return eye, trace
    values, vectors = eigh(total)
    order = values.abs().argsort(descending=True)[:q]
    return vectors[:, order].to(hess.z.dtype), trace


@dataclass
class KroneckerCoarse:
    """``apply(R)`` = M^-1 R for R (K, E, D) (module doc). ``psi`` (E, q), ``phi`` (D, r), ``factor``
    the Cholesky factor of H_S + lambda I (q r, q r), ``alpha`` the scale on the complement;
    ``info`` the sizes, alpha and the traces of H (estimated) and H_S, for the record."""

    psi: torch.Tensor
    phi: torch.Tensor
    factor: torch.Tensor
    alpha: float
    info: dict[str, Any]

    @staticmethod
    def build(
        hess: HeadHessian, damping: float, rank_d: int, rank_e: int = 128, probe: int = 512
    ) -> KroneckerCoarse:
        """The preconditioner of ``hess`` + ``damping`` I on a (``rank_e`` x ``rank_d``) subspace; an
        :class:`EifError` if H_S + damping I is not positive definite."""
        f, n, dim, e = hess.features, hess.n, hess.dim, hess.e
        dtype = f.dtype
        second = (f.T.double() @ f.double()) / n
        _, vecs = eigh(second)
        r = max(1, min(int(rank_d), dim))
        phi = vecs[:, -r:].flip(1).to(dtype)  # (D, r), descending
        psi, trace_h = _embedding_basis(hess, max(1, min(int(rank_e), e)), probe)
        q = psi.shape[1]
        a = f @ phi  # (N, r)
        hs = torch.zeros(q * q, r * r, dtype=torch.float64, device=f.device)
        if hess.factored or hess.softmax is not None:  # few float64 accumulations of H_S
            chunk = max(1, (1 << 26) // (q * e))
        else:  # the term-by-term or autograd curvature: temporaries of (rows, q, max(M, E)) floats
            m = e if hess.pu is None else max(e, hess.pu.shape[0])
            chunk = max(1, APPLY_FLOATS // (q * m))
        for s in range(0, n, chunk):
            rows = min(chunk, n - s)
            block = hess.compressed_curvature(s, rows, psi)  # (rows, q, q) = Psi^T H_z,i Psi
            aa = (a[s : s + rows, :, None] * a[s : s + rows, None, :]).reshape(rows, r * r)
            hs += (block.reshape(rows, q * q).T @ aa).double()  # GEMM in the data's precision
        hs = (hs / n).view(q, q, r, r).permute(0, 2, 1, 3).reshape(q * r, q * r)
        hs = (hs + hs.T) / 2
        rest = e * dim - q * r
        mean_rest = (trace_h - float(hs.diagonal().sum())) / rest if rest > 0 else 0.0
        alpha = float(damping) + max(0.0, mean_rest)
        shifted = hs + float(damping) * torch.eye(q * r, dtype=hs.dtype, device=hs.device)
        factor, bad = cholesky_ex(shifted)
        if int(bad) != 0:
            lowest = float(eigvalsh(hs)[0])
            raise EifError(
                f"H + {damping:g} I is not positive definite: on its top {q} x {r} Kronecker subspace H "
                f"has an eigenvalue of about {lowest:.3g}; use a damping above {-lowest:.3g}"
            )
        info = {"rank_e": q, "rank_d": r, "alpha": alpha, "trace": trace_h, "trace_coarse": float(hs.trace())}
        return KroneckerCoarse(psi, phi, factor.to(dtype), alpha, info)

    def apply(self, r: torch.Tensor) -> torch.Tensor:
        """M^-1 R for R (K, E, D): two (K E, D) x (D, r) GEMMs and elementwise work on R."""
        k, e, dim = r.shape
        c = self.psi.T @ (r.reshape(k * e, dim) @ self.phi).view(k, e, -1)  # (K, q, r) on the subspace
        y = torch.cholesky_solve(c.reshape(k, -1).T, self.factor).T.reshape(c.shape)
        lift = (self.psi @ (y - c / self.alpha)).reshape(k * e, -1)  # (K E, r)
        return torch.addmm(r.reshape(k * e, dim), lift, self.phi.T, beta=1.0 / self.alpha).view_as(r)
