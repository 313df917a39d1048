# pyright: strict
"""The Hessian of the mean training loss with respect to the head weight W, as an operator.

With z_i = W f_i + b and per-sample losses L_i(z_i), the Hessian of mean_i L_i in W applied to a
direction X (E, D) is ``H X = mean_i (H_z,i X f_i) f_i^T``, H_z,i = d^2 L_i / dz_i^2 (E, E). For K
directions at once (K, E, D): one GEMM ``T = F X^T`` (N, K E), the per-sample curvatures applied to
the rows of T in place (small row blocks that stay in cache), and one GEMM ``T^T F``: two head passes
(N x D x E) per direction. Splitting the two GEMMs over sample chunks instead would read and write
the (K E, D) output once per chunk, which costs more than the arithmetic at these sizes.

The per-sample curvatures come from :func:`eif.influence.curvature.curvature_factors` (a loss with a
cosine form: H_z = B S B^T - sigma I on M + 2 columns) in blocks of ``FACTOR_BLOCK`` samples. When
they fit in ``cache_floats`` they are kept for all samples, built on the first product with H (CG and
Lanczos make many); one pass over the samples (LiSSA, a residual, the per-sample curvatures) computes
them block by block instead and keeps only the current block (at CUB shape the full factors are
N (M+2)^2 + 2 N E floats, 270 MB). Either way a sample's factors are the same numbers. Otherwise (many
cosine targets, e.g. InShop's 3,997 proxies) each product applies H_z term by term without any M x M
matrix, O(K M E) per sample: in closed form from per-sample
statistics kept once (N x M floats) for a softmax-form loss (:mod:`eif.influence.softmax_curvature`),
else through autograd in the cosines (:func:`eif.influence.curvature.curvature_apply`); a loss without a
cosine form uses double backprop through the per-sample loss.
"""

from __future__ import annotations

import torch

from eif.influence.curvature import curvature_apply, curvature_factors, hvp_z
from eif.influence.softmax_curvature import SoftmaxCurvature
from eif.influence.task import ConfusionTask
from eif.influence.torch_typed import norm

CACHE_FLOATS = 1 << 28  # 1 GiB of float32 curvature factors at most
ROWS = 32  # samples per in-place curvature block
# Floats per (rows, K, M) temporary when H_z is applied term by term: larger blocks than ROWS, since
# each call's fixed cost dominates at 32 rows (benchmarks/README.md: the InShop-shaped measurement).
APPLY_FLOATS = 1 << 22
# Samples per curvature_factors call, for the kept and the per-block factors alike (the same numbers
# either way): its batched torch.func.hessian holds a few hundred MB of temporaries at 1024 samples
# of CUB shape, which stayed resident and raised the peak of a LiSSA run; 256 does not.
FACTOR_BLOCK = 256

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _concat(parts: list[Factors]) -> Factors:
    """Factors of consecutive sample blocks as one (no copy for a single block)."""
    if len(parts) == 1:
        return parts[0]
    return (
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        torch.cat([p[2] for p in parts]),
    )


class _FactorStore:
    """The curvature factors computed so far, shared by an operator and its copies of other damping:
    ``kept`` those of all samples (uq (N, E, 2), S (N, M+2, M+2), sigma (N,)) or None, ``block`` the
    first sample and factors of the last span of blocks computed on their own."""

    def __init__(self) -> None:
        self.kept: Factors | None = None
        self.block: tuple[int, Factors] | None = None


class HeadHessian:
    """``matvec(X)`` = (H + damping I) X for X (K, E, D); see the module doc."""

    def __init__(
        self,
        task: ConfusionTask,
        features: torch.Tensor,
        z: torch.Tensor,
        y: torch.Tensor,
        damping: float = 0.0,
        cache_floats: int = CACHE_FLOATS,
    ) -> None:
        self.task, self.features, self.z, self.y = task, features, z, y
        self.damping = float(damping)
        self.n, self.dim = features.shape
        self.e = z.shape[1]
        loss = task.cos_loss
        self.pu = loss.cosine_targets() if loss is not None else None  # (M, E)
        m = 0 if self.pu is None else self.pu.shape[0]
        self.factored = loss is not None and self.n * (m + 2) ** 2 <= cache_floats
        self._store = _FactorStore()
        self.softmax: SoftmaxCurvature | None = None
        if (
            not self.factored
            and loss is not None
            and loss.cos_logit_scale() is not None
            and self.n * m <= cache_floats
        ):
            self.softmax = SoftmaxCurvature.build(loss, z, y)
        self.counter = [0]  # directions multiplied so far (each about two head passes), shared by copies
        self._buffer: torch.Tensor | None = None

    @property
    def form(self) -> str:
        """How H_z,i is applied: "factors" (cached), "softmax" (closed form; statistics kept, or
        computed per block when they do not fit), "cosine_autograd" (term by term, autograd in the
        cosines) or "autograd" (double backprop)."""
        if self.factored:
            return "factors"
        loss = self.task.cos_loss
        if loss is None:
            return "autograd"
        return "cosine_autograd" if loss.cos_logit_scale() is None else "softmax"

    @property
    def factors(self) -> Factors | None:
        """The factors of all samples once kept (:meth:`keep_factors`), else None."""
        return self._store.kept

    @property
    def products(self) -> int:
        return self.counter[0]

    def with_damping(self, damping: float) -> HeadHessian:
        """The same operator (sharing the cached curvatures and the product counter) with another damping."""
        other = object.__new__(HeadHessian)
        other.__dict__.update(self.__dict__)
        other.damping = float(damping)
        return other

    def keep_factors(self) -> None:
        """Compute and keep the factors of all samples (once, shared by copies), when they fit; filled in
        place, ``FACTOR_BLOCK`` samples per call (no second copy to concatenate)."""
        loss = self.task.cos_loss
        if not self.factored or self._store.kept is not None or loss is None or self.pu is None:
            return
        m, z, y = self.pu.shape[0], self.z, self.y
        uq, core = z.new_empty(self.n, self.e, 2), z.new_empty(self.n, m + 2, m + 2)
        sigma = z.new_empty(self.n)
        for s in range(0, self.n, FACTOR_BLOCK):
            part = curvature_factors(loss, z[s : s + FACTOR_BLOCK], y[s : s + FACTOR_BLOCK])
            for dst, src in zip((uq, core, sigma), part):
                dst[s : s + FACTOR_BLOCK] = src
        self._store.kept, self._store.block = (uq, core, sigma), None

    def factors_of(self, s: int, n: int) -> Factors:
        """The factors (uq (n, E, 2), S (n, M+2, M+2), sigma (n,)) of the samples s, ..., s + n - 1 of a
        loss with a cosine form: from the kept ones, else from the ``FACTOR_BLOCK``-sample blocks that
        cover them, kept for the next calls until one asks for other samples (a pass in order, or
        repeated calls on the same samples as a power iteration's, computes each block once)."""
        kept = self._store.kept
        if kept is not None:
            return (kept[0][s : s + n], kept[1][s : s + n], kept[2][s : s + n])
        span = self._store.block
        if span is None or not span[0] <= s or s + n > span[0] + len(span[1][2]):
            loss = self.task.cos_loss
            assert loss is not None
            b0, b1 = s - s % FACTOR_BLOCK, s + n
            parts = [
                curvature_factors(loss, self.z[b : b + FACTOR_BLOCK], self.y[b : b + FACTOR_BLOCK])
                for b in range(b0, b1, FACTOR_BLOCK)
            ]
            span = self._store.block = (b0, _concat(parts))
        lo = s - span[0]
        uq, core, sigma = span[1]
        return (uq[lo : lo + n], core[lo : lo + n], sigma[lo : lo + n])

    def curvature(self, s: int, t: torch.Tensor) -> torch.Tensor:
        """H_z,i t for the samples s, s+1, ...: t (n, K, E) -> (n, K, E)."""
        return self.curvature_at(slice(s, s + t.shape[0]), t)

    def curvature_at(self, idx: slice | torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """H_z,i t for the samples ``idx`` (a slice or index tensor of n): t (n, K, E) -> (n, K, E)."""
        if self.softmax is not None:
            return self.softmax.apply(idx, t)
        zc, yc = self.z[idx], self.y[idx]
        loss = self.task.cos_loss
        if self.pu is None or loss is None:
            return hvp_z(self.task, zc, yc, t.transpose(0, 1)).transpose(0, 1)
        if not self.factored:
            return curvature_apply(loss, zc, yc, t)
        if isinstance(idx, slice):
            start = 0 if idx.start is None else int(idx.start)
            uq, core, sigma = self.factors_of(start, t.shape[0])
        else:  # arbitrary samples: from the kept factors
            self.keep_factors()
            kept = self._store.kept
            assert kept is not None
            uq, core, sigma = (f[idx] for f in kept)
        m = self.pu.shape[0]
        y = torch.cat([t @ self.pu.T, torch.bmm(t, uq)], -1)  # B^T t (n, K, M + 2): targets, then u and q
        ys = torch.bmm(y, core.mT)  # S B^T t
        out = torch.bmm(ys[..., m:], uq.mT)
        out += ys[..., :m] @ self.pu
        return out.sub_(t * sigma[:, None, None])

    def compressed_curvature(self, s: int, n: int, psi: torch.Tensor) -> torch.Tensor:
        """Psi^T H_z,i Psi for the samples s, ..., s + n - 1: psi (E, q) -> (n, q, q). With cached
        factors, (Psi^T B_i) S_i (Psi^T B_i)^T - sigma_i I, the targets' part Psi^T P^^T shared by all
        samples (O(q M (M + q)) per sample); with softmax statistics, their closed form (O(M q^2) per
        sample); otherwise H_z,i applied to the q columns of Psi."""
        q = psi.shape[1]
        if self.softmax is not None:
            return self.softmax.compressed(slice(s, s + n), psi)
        if not self.factored or self.pu is None:
            return self.curvature(s, psi.T.expand(n, q, self.e)) @ psi
        self.keep_factors()  # the coarse space is built before CG's many products, which keep them too
        uq, core, sigma = self.factors_of(s, n)
        basis = torch.cat([(self.pu @ psi).T.expand(n, q, -1), psi.T @ uq], -1)  # Psi^T B_i (n, q, M+2)
        out = basis @ core @ basis.mT
        out.diagonal(dim1=-2, dim2=-1).sub_(sigma[:, None])
        return out

    def curvature_rows(self, start: int, t: torch.Tensor) -> None:
        """In place, H_z,i applied to the rows of t (n, K E) for the samples start, ..., start + n - 1
        (row i holds the K directions X_k f_i): small row blocks that stay in cache."""
        n = t.shape[0]
        k = t.shape[1] // self.e
        step = ROWS
        if not self.factored and self.pu is not None:  # term by term: fewer, larger calls (~4M floats)
            step = max(ROWS, min(1024, APPLY_FLOATS // (k * self.pu.shape[0])))
        for s in range(0, n, step):  # in place: H_z,i X f_i replaces X f_i
            rows = t[s : s + step].view(-1, k, self.e)
            rows.copy_(self.curvature(start + s, rows))

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """(H + damping I) X for X (K, E, D)."""
        k = x.shape[0]
        self.keep_factors()  # products come many at a time (CG, Lanczos): computed once for all of them
        flat = x.reshape(k * self.e, self.dim)
        if self._buffer is None or self._buffer.numel() < self.n * k * self.e:
            self._buffer = x.new_empty(self.n * k * self.e)
        t = torch.mm(self.features, flat.T, out=self._buffer[: self.n * k * self.e].view(self.n, k * self.e))
        self.curvature_rows(0, t)
        out = torch.mm(t.T, self.features).div_(self.n)
        if self.damping:
            out.add_(flat, alpha=self.damping)
        self.counter[0] += k
        return out.view_as(x)

    def sample_curvature(self, iters: int = 30, seed: int = 0) -> torch.Tensor:
        """|H_i|_2 = |H_z,i|_2 ||f_i||^2 of every sample (N,), by power iteration on all H_z,i at once
        (an estimate from below of each spectral norm)."""
        gen = torch.Generator().manual_seed(seed)
        t = torch.randn(self.n, 1, self.e, generator=gen, dtype=torch.float64).to(self.z)
        lam = self.z.new_zeros(self.n)
        for s in range(0, self.n, 1024):
            block = t[s : s + 1024]
            size = block.new_zeros(len(block), 1, 1)  # |H_z,i t| of the last iterate (0 if iters = 0)
            for _ in range(iters):
                u = self.curvature(s, block)
                size = norm(u, dim=-1, keepdim=True)
                block = u / size.clamp_min(1e-30)
            lam[s : s + len(block)] = size[:, 0, 0]
        return lam * self.features.pow(2).sum(-1)
