# pyright: strict
"""Solvers of (H + lambda I) X = V for the classic influence function, one strategy class each.

A solver's settings are exactly its own fields (``kind`` picks the class: ``methods.if.solver.kind``),
so only they enter a store key. Each is :meth:`~Solver.prepare`\\ d once on the operator H
(:class:`~eif.influence.hessian.HeadHessian`) and then solves for every chunk of K right-hand sides
V_k = G_k^T F_p,k (G (K, R, E), F_p (K, R, D), V (K, E, D); LiSSA never forms V):

- :class:`Lissa`: the reference recursion (:mod:`eif.influence.lissa`); its fixed point has
  lambda = scale * damping. ``scale="auto"``: ``AUTO_SCALE_FACTOR`` times the largest per-sample
  curvature max_i |H_i|_2 (power-iteration estimate). Its relative residual is computed by the caller
  together with the scores (one shared GEMM).
- :class:`ConjugateGradients`: CG on (H + damping I) X = V to relative residual ``tol``, all
  confusions at once, with at most one preconditioner built once and shared by every confusion:
  ``coarse`` > 0, H solved exactly on a Kronecker subspace (:class:`KroneckerSpace`), or
  ``deflate`` > 0, Lanczos steps whose top Ritz pairs precondition every solve (:class:`LanczosDeflation`).
  H can be indefinite (the losses normalise z): a damping that leaves H + damping I indefinite is an
  error, found by Lanczos's smallest eigenvalue, the coarse block's Cholesky, or negative curvature
  met by CG.
- :class:`Exact`: a dense solve of (H + damping I), for small heads (E * D <= ``EXACT_MAX_PARAMS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch.func import vmap

from eif.influence.coarse import KroneckerCoarse
from eif.influence.hessian import HeadHessian
from eif.influence.krylov import Spectrum, lanczos, pcg
from eif.influence.lissa import lissa
from eif.influence.torch_typed import solve
from eif.settings import SPEED, Settings, setting
from eif.utils.errors import EifError, require

EXACT_MAX_PARAMS = 8192
# scale=auto: scale = 2 max_i |H_i|_2. A step multiplies h along an eigenvector of H_i by
# 1 - damping - lambda/scale, stable for 0 <= lambda < (2 - damping) scale; at 2x the largest curvature
# lambda/scale <= 1/2, which leaves a 4x margin for the power-iteration estimate being low.
AUTO_SCALE_FACTOR = 2.0

Info = dict[str, Any]


@dataclass
class Solved:
    """``x`` (K, E, D); ``iterations`` (K,); ``residual`` (K,) the relative residual of the solver's
    own system, or None when the caller computes it with the scores."""

    x: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor | None


def rhs(g: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """V = G^T F_p (K, E, D) from G (K, R, E) and F_p (K, R, D)."""
    return torch.einsum("kre,krd->ked", g, fp)


class Prepared(Protocol):
    """A solver set up on one operator: ``lam`` the damping of the system it converges to, ``scale``
    the LiSSA scale used (nan for the others)."""

    lam: float
    scale: float

    def solve(self, g: torch.Tensor, fp: torch.Tensor, progress: bool) -> Solved: ...


class Solver(Settings):
    """Base of the solver settings (the ``kind`` field names the class)."""

    def check(self, weight: torch.Tensor) -> None:
        """A user error before any work (default: none)."""

    def prepare(self, hess: HeadHessian, info: Info) -> Prepared:
        """Set up once on ``hess``, recording diagnostics into ``info``."""
        raise NotImplementedError

    def lam(self, hess: HeadHessian) -> float:
        """lambda of the system (H + lambda I) x = v that the solver converges to on ``hess`` (the
        ``lam`` of :meth:`prepare`), without setting anything up."""
        raise NotImplementedError


# --- LiSSA ---------------------------------------------------------------------------------------


@dataclass
class _LissaRun:
    hess: HeadHessian
    cfg: Lissa
    scale: float
    lam: float
    top_curvature: float

    def solve(self, g: torch.Tensor, fp: torch.Tensor, progress: bool) -> Solved:
        x = lissa(
            self.hess,
            (g, fp),
            self.scale,
            self.cfg.damping,
            int(self.cfg.block_size),
            progress,
            step_threads=self.cfg.step_threads,
        )
        # the row sums are finite iff no entry is inf/nan (or they overflow, which is divergence too);
        # one read of X at full bandwidth, where isfinite(X) costs much more
        if not bool(torch.isfinite(x.flatten(1).sum(1)).all()):
            top = self.top_curvature
            hint = f"methods.if.solver.scale={AUTO_SCALE_FACTOR * top:.0f} or methods.if.solver.scale=auto"
            raise EifError(
                f"LiSSA diverged with methods.if.solver.scale={self.scale:.4g}: the largest per-sample "
                f"curvature is about {top:.3g}; raise the scale (e.g. {hint}) or use a converged IF "
                "(e.g. methods=[eif,if_converged])"
            )
        return Solved(x, torch.full((len(g),), self.hess.n, dtype=torch.long), None)


class Lissa(Solver):
    """``kind: lissa``: ``scale`` (a number, the reference's 500, or "auto"), ``damping`` < 1 (the
    fixed point has lambda = scale * damping); ``block_size`` and ``step_threads`` (torch threads for
    the sequential steps; None leaves torch's setting alone) change speed only."""

    kind: Literal["lissa"] = "lissa"
    scale: PositiveFloat | Literal["auto"] = 500.0
    damping: NonNegativeFloat = setting(0.01, lt=1)
    block_size: PositiveInt = setting(256, unkeyed=SPEED)
    step_threads: PositiveInt | None = setting(None, unkeyed=SPEED)

    def scale_for(self, top_curvature: float) -> float:
        """The scale used: ``AUTO_SCALE_FACTOR`` times the largest per-sample curvature for "auto"."""
        return AUTO_SCALE_FACTOR * top_curvature if self.scale == "auto" else float(self.scale)

    def lam(self, hess: HeadHessian) -> float:
        # a fixed scale needs no curvature (one pass over the samples for "auto")
        top = float(hess.sample_curvature().max()) if self.scale == "auto" else float("nan")
        return self.scale_for(top) * self.damping

    def prepare(self, hess: HeadHessian, info: Info) -> Prepared:
        curv = hess.sample_curvature()
        top = float(curv.max())
        scale = self.scale_for(top)
        info["curvature"] = {
            "max": top,
            "median": float(curv.median()),
            "above_2_scale": int((curv > 2 * scale).sum()),
            "n": hess.n,
        }
        return _LissaRun(hess, self, scale, scale * self.damping, top)


# --- conjugate gradients and its preconditioners -------------------------------------------------


@dataclass
class PcgPreconditioner:
    """What :func:`eif.influence.krylov.pcg` takes: Ritz pairs (start and preconditioner on their span)
    or an operator M^-1 on (K, E, D)."""

    spectrum: Spectrum | None = None
    apply: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class KroneckerSpace:
    """H solved exactly on the top ``rank_d`` feature x ``rank_e`` embedding directions
    (:mod:`eif.influence.coarse`); no product with H to build."""

    rank_d: int
    rank_e: int

    def build(self, hess: HeadHessian, lam: float, info: Info) -> PcgPreconditioner:
        coarse = KroneckerCoarse.build(hess, lam, self.rank_d, self.rank_e)
        info["coarse"] = coarse.info
        return PcgPreconditioner(apply=coarse.apply)


@dataclass(frozen=True)
class LanczosDeflation:
    """``steps`` Lanczos steps on H (:mod:`eif.influence.krylov`), keeping the top ``steps // 2`` Ritz
    pairs; Lanczos's smallest Ritz value proves an indefinite H + lambda I."""

    steps: int

    def build(self, hess: HeadHessian, lam: float, info: Info) -> PcgPreconditioner:
        z = hess.z
        spectrum = lanczos(
            hess.with_damping(0.0).matvec,
            (hess.e, hess.dim),
            self.steps,
            keep=self.steps // 2,
            dtype=z.dtype,
            device=z.device,
        )
        if spectrum.lowest + lam <= 0:
            raise EifError(
                f"H + {lam:g} I is not positive definite: H's smallest eigenvalue is about "
                f"{spectrum.lowest:.3g}; use a damping above {-spectrum.lowest:.3g}"
            )
        info["spectrum"] = {
            "lanczos_steps": spectrum.steps,
            "kept": len(spectrum.values),
            "highest": spectrum.highest,
            "lowest": spectrum.lowest,
        }
        return PcgPreconditioner(spectrum=spectrum)


@dataclass
class _CgRun:
    system: HeadHessian
    cfg: ConjugateGradients
    pre: PcgPreconditioner
    lam: float
    scale: float = float("nan")

    def solve(self, g: torch.Tensor, fp: torch.Tensor, progress: bool) -> Solved:
        # from zero: the first preconditioned direction already holds the Ritz-span solution, and a
        # warm start would cost one more product; the recurrence's residual is the true one to
        # float32 round-off (tests/test_methods.py), so no product is spent on checking it
        sol = pcg(
            self.system.matvec,
            rhs(g, fp),
            self.lam,
            self.cfg.tol,
            self.cfg.max_iter,
            self.pre.spectrum,
            warm_start=False,
            precondition=self.pre.apply,
        )
        return Solved(sol.x, sol.iterations, sol.residual)


class ConjugateGradients(Solver):
    """``kind: cg``: ``damping`` is lambda > 0, ``tol`` the relative residual to reach within
    ``max_iter`` iterations; at most one preconditioner: ``coarse`` > 0 the feature-side rank of a
    Kronecker coarse space (with ``coarse_e`` embedding-side directions), or ``deflate`` > 0 Lanczos
    steps (both 0: plain CG)."""

    kind: Literal["cg"] = "cg"
    damping: PositiveFloat
    tol: PositiveFloat = 1e-6
    max_iter: PositiveInt = 500
    coarse: NonNegativeInt = 0
    coarse_e: PositiveInt = 128
    deflate: NonNegativeInt = 0

    @model_validator(mode="after")
    def _one_preconditioner(self) -> ConjugateGradients:
        if self.coarse and self.deflate:
            raise ValueError(
                f"coarse={self.coarse} and deflate={self.deflate} are two preconditioners; set one to 0"
            )
        return self

    def preconditioner(self) -> KroneckerSpace | LanczosDeflation | None:
        """The preconditioner the settings name (the validator allows at most one)."""
        if self.deflate:
            return LanczosDeflation(self.deflate)
        return KroneckerSpace(self.coarse, self.coarse_e) if self.coarse else None

    def lam(self, hess: HeadHessian) -> float:
        return float(self.damping)

    def prepare(self, hess: HeadHessian, info: Info) -> Prepared:
        pre = self.preconditioner()
        built = PcgPreconditioner() if pre is None else pre.build(hess, self.damping, info)
        return _CgRun(hess.with_damping(self.damping), self, built, self.damping)


# --- exact ---------------------------------------------------------------------------------------


def exact_hessian(hess: HeadHessian) -> torch.Tensor:
    """Dense H (E*D, E*D) of the mean training loss w.r.t. W (row-major (e, d) flattening)."""
    task, features, z, y = hess.task, hess.features, hess.z, hess.y
    e, dim = hess.e, hess.dim
    require(e * dim <= EXACT_MAX_PARAMS, f"exact IF solver needs E*D <= {EXACT_MAX_PARAMS}, got {e}*{dim}")

    def per(q: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return task.train_loss(q[None], yy[None])[0]

    hz = vmap(torch.func.hessian(per))(z, y)  # (N, E, E)
    h = torch.einsum("nab,nc,nd->acbd", hz, features, features) / hess.n
    return h.reshape(e * dim, e * dim)


@dataclass
class _ExactRun:
    dense: torch.Tensor
    lam: float
    scale: float = float("nan")

    def solve(self, g: torch.Tensor, fp: torch.Tensor, progress: bool) -> Solved:
        v = rhs(g, fp)
        x = solve(self.dense, v.reshape(len(v), -1).T).T.reshape(v.shape)
        return Solved(x, torch.ones(len(v), dtype=torch.long), None)


class Exact(Solver):
    """``kind: exact``: a dense solve of (H + ``damping`` I), damping > 0; E * D <= 8192 only."""

    kind: Literal["exact"] = "exact"
    damping: PositiveFloat

    def check(self, weight: torch.Tensor) -> None:
        require(
            weight.numel() <= EXACT_MAX_PARAMS,
            f"the exact IF solver needs E*D <= {EXACT_MAX_PARAMS}, got {tuple(weight.shape)}; "
            "use methods.if.solver.kind=cg or lissa",
        )

    def lam(self, hess: HeadHessian) -> float:
        return float(self.damping)

    def prepare(self, hess: HeadHessian, info: Info) -> Prepared:
        dense = exact_hessian(hess)
        dense = dense + self.damping * torch.eye(len(dense), dtype=dense.dtype, device=dense.device)
        return _ExactRun(dense, self.damping)


AnySolver = Annotated[Lissa | ConjugateGradients | Exact, Field(discriminator="kind")]
