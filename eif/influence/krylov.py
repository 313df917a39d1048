# pyright: strict
"""Krylov methods for (H + lambda I) X = V with many right-hand sides and a shared spectrum.

- :func:`lanczos`: the top of H's spectrum, once per model: ``steps`` Lanczos iterations from one
  random direction with full re-orthogonalisation (the basis is ``steps`` x E x D floats), Ritz values
  and vectors from the tridiagonal matrix. It also estimates H's smallest eigenvalue, which says
  whether H + lambda I is positive definite at all (the losses normalise z, so H can be indefinite).
- :func:`pcg`: conjugate gradients for K systems at once, preconditioned by the Ritz pairs:
  ``M^-1 = U diag(1 / (theta + lambda)) U^T + (I - U U^T) / (theta_k + lambda)``. Eigenvalues in the
  span of U map to about 1 and the rest into ``[(lambda_min + lambda) / (theta_k + lambda), 1]``, so the
  condition number drops from ``(lambda_max + lambda) / (lambda_min + lambda)`` to about
  ``(theta_k + lambda) / (lambda_min + lambda)``: the top of the spectrum, which every confusion shares,
  is paid for once instead of once per confusion (the idea of Arnoldi-based influence, Schioppa et al.
  2022, used here as a preconditioner so that the solve still converges to the exact system).

scipy has Lanczos (``eigsh``) and CG, but for one system at a time on NumPy arrays; here the operator
is a batched torch GEMM over many right-hand sides, so both are written for (K, E, D) tensors (tests
check them against scipy and dense solves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from eif.influence.torch_typed import eigh, norm
from eif.utils.errors import EifError

Matvec = Callable[[torch.Tensor], torch.Tensor]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Frobenius inner products of (K, ...) tensors (K,), in float64: one batched GEMV in the
    inputs' precision (BLAS accumulates in blocks; a float64 copy of K x E x D would cost more than a
    head pass), then cast."""
    k = a.shape[0]
    return torch.bmm(a.reshape(k, 1, -1), b.reshape(k, -1, 1)).reshape(k).double()


@dataclass
class Spectrum:
    """Ritz pairs of H: ``values`` (k,) descending and ``vectors`` (k, E, D) orthonormal (Frobenius);
    ``lowest`` the smallest Ritz value (an estimate of lambda_min from above); ``steps`` taken."""

    values: torch.Tensor
    vectors: torch.Tensor
    lowest: float
    steps: int

    @property
    def highest(self) -> float:
        return float(self.values[0]) if len(self.values) else float("nan")


def lanczos(
    matvec: Matvec,
    shape: tuple[int, int],
    steps: int,
    keep: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Spectrum:
    """``steps`` Lanczos iterations on H (``matvec`` maps (1, E, D) -> (1, E, D)); the ``keep`` largest
    Ritz pairs and the smallest Ritz value."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, *shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    q /= norm(q)
    basis = torch.empty(steps, *shape, dtype=dtype, device=device)
    alpha: list[float] = []
    beta: list[float] = []
    flat = basis.view(steps, -1)
    m = 0
    for j in range(steps):
        basis[j] = q[0]
        w = matvec(q)[0]
        a = float(_dot(w[None], q)[0])
        w = w - a * q[0] - (beta[-1] * basis[j - 1] if j else 0)
        # full re-orthogonalisation against the whole basis (one classical Gram-Schmidt pass: the
        # extreme Ritz values the preconditioner uses are insensitive to the rest of the loss)
        coef = flat[: j + 1] @ w.reshape(-1)
        w = w - (coef @ flat[: j + 1]).view(shape)
        b = float(norm(w))
        alpha.append(a)
        m = j + 1
        if b <= 1e-8 * max(1.0, abs(a)):
            break  # an invariant subspace: the spectrum seen so far is exact
        beta.append(b)
        q = (w / b)[None]
    t = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(beta[: m - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    theta, y = eigh(t)
    order = torch.argsort(theta, descending=True)[: max(0, min(keep, m))]
    vectors = (y[:, order].T.to(dtype=dtype, device=device) @ flat[:m]).view(-1, *shape)
    return Spectrum(theta[order].to(dtype), vectors, float(theta.min()), m)


@dataclass
class Solution:
    """``x`` (K, E, D); ``residual`` (K,) the relative residual |V - A X| / |V| of the recurrence;
    ``iterations`` (K,)."""

    x: torch.Tensor
    residual: torch.Tensor
    iterations: torch.Tensor


def pcg(
    matvec: Matvec,
    v: torch.Tensor,
    damping: float,
    tol: float,
    max_iter: int,
    spectrum: Spectrum | None = None,
    warm_start: bool = True,
    precondition: Matvec | None = None,
) -> Solution:
    """Solve (H + damping I) X = V for K right-hand sides V (K, E, D) to relative residual ``tol``.

    ``matvec`` applies H + damping I. With a ``spectrum`` the start is the solution on its span and
    the iteration is preconditioned by it (module doc); otherwise ``precondition`` (a symmetric
    positive definite M^-1 on (K, E, D)), if given, preconditions it. Stops with an :class:`EifError` on
    non-positive curvature (H + damping I is not positive definite)."""
    k = v.shape[0]
    if spectrum is not None and len(spectrum.values):
        u = spectrum.vectors.reshape(len(spectrum.values), -1)
        inv = 1.0 / (spectrum.values + damping)
        rest = 1.0 / float(spectrum.values[-1] + damping)

        def ritz(r: torch.Tensor) -> torch.Tensor:
            c = r.reshape(k, -1) @ u.T  # (K, k) coordinates on the Ritz vectors
            return (rest * r.reshape(k, -1) + (c * (inv - rest)) @ u).view_as(r)

        precondition = ritz

        if warm_start:  # the solution on the span of the Ritz vectors; costs one product for r
            x = (((v.reshape(k, -1) @ u.T) * inv) @ u).view_as(v)
            r = v - matvec(x)
        else:
            x, r = torch.zeros_like(v), v.clone()
    else:
        x = torch.zeros_like(v)
        r = v.clone()
    vnorm = _dot(v, v).sqrt().clamp_min(1e-300)
    z = precondition(r) if precondition is not None else r
    p = z.clone()
    rz = _dot(r, z)
    res = _dot(r, r).sqrt() / vnorm
    iters = torch.zeros(k, dtype=torch.long)
    for _ in range(max_iter):
        active = res > tol
        if not bool(active.any()):
            break
        ap = matvec(p)
        pap = _dot(p, ap)
        if bool((active & (pap <= 0)).any()):
            raise EifError(
                f"H + {damping:g} I is not positive definite (negative curvature met): raise the damping "
                "above the magnitude of H's most negative eigenvalue"
            )
        a = torch.where(active, rz / torch.where(active, pap, 1.0), 0.0).to(v.dtype)
        shape = (-1,) + (1,) * (v.dim() - 1)
        # in place (fresh K x E x D tensors page-fault every iteration); a = 0 leaves a converged
        # system's x and r as they are, so its direction p may change freely
        x.addcmul_(a.view(shape), p)
        r.addcmul_(a.view(shape), ap, value=-1)
        z = precondition(r) if precondition is not None else r
        rz_new = _dot(r, z)
        b = torch.where(active, rz_new / rz.clamp_min(1e-300), 0.0).to(v.dtype)
        p.mul_(b.view(shape)).add_(z)
        rz = torch.where(active, rz_new, rz)
        res = torch.where(active, _dot(r, r).sqrt() / vnorm, res)
        iters += active.long()
    return Solution(x, res.to(v.dtype), iters)
