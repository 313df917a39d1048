"""Classic influence functions (paper Eq. 4; docs/protocol.md, IF) on cached features, batched over K.

score_i = grad_W obj^T H^-1 grad_W L_i, obj = sign * d, H the Hessian of the mean training loss
w.r.t. the head weight W. This is the paper's Eq. 4 with the sign **flipped**, so that, as for EIF,
**positive = harmful** (up-weighting sample i would pull a confusion pair closer). The reference's
IF code reports the opposite sign.

Structure used everywhere: with z_i = W f_i + b, grad_W L_i = g_i f_i^T (g_i = dL_i/dz_i), the
per-sample Hessian is H_i V = (H_z,i V f_i) f_i^T (H_z,i = d^2 L_i/dz_i^2, E x E: a closed form through
the cosines for losses with the cosine form, else ``torch.func.hessian``; the operator H + lambda I
is :class:`eif.influence.hessian.HeadHessian`), grad_W obj_k = G_k^T F_p,k, and
score_ki = g_i^T (X_k f_i).

Every result records how well its linear system was solved: the relative residual
|(H + lambda I) x - v| / |v| per confusion (one more product with H; cg's recurrence gives it for
free), with lambda the damping of the system the solver converges to; LiSSA also records its
per-sample curvatures |H_i|_2 against 2 * scale (above it the recursion is not a contraction for
that sample).

Solvers for X = H^-1 v:
- ``lissa``: the reference recursion, one pass over the training set at batch 1 in index order:
  h_0 = v, h_t = v + (1 - damping) h_{t-1} - H_t h_{t-1} / scale, X = h_N / scale. Its fixed point
  is (H + scale * damping I)^-1 v. ``scale="auto"``: ``AUTO_SCALE_FACTOR`` times the largest
  per-sample curvature max_i |H_i|_2 (power-iteration estimate,
  :meth:`~eif.influence.hessian.HeadHessian.sample_curvature`), returned in ``IfResult.scale``.
  Run in blocks of B samples: the reads h f_j need h at the block start (one GEMM) plus the rank-1
  updates made earlier in the block (a B x B feature Gram); each step applies the explicit H_z,j
  (computed for many samples in one batched call; factored as B S B^T - sigma I with M + 2 columns
  for a cosine loss, see :func:`curvature_factors`) to the K rows; the block's updates are applied
  with one GEMM. The decay and the +v terms are kept as two scalars (h = beta * H~ + gamma * v). This
  is the sequential recursion, reassociated. ``step_threads`` (an explicit caller choice; the
  influence stage asks for 1) runs the steps on fewer torch threads than the GEMMs, restored
  afterwards: a step's ~5 small products gain little from a second thread, and each would wait at an
  OpenMP barrier for it (up to ms when the core is busy).
- ``cg``: conjugate gradients on (H + damping I) X = v to relative residual ``cg_tol``, all confusions
  at once, with one preconditioner built once and shared by every confusion: ``coarse`` > 0 solves
  H exactly on a Kronecker subspace (the top ``coarse`` feature directions x ``coarse_e`` embedding
  directions; :mod:`eif.influence.coarse`; no Hessian-vector product to build), ``deflate`` > 0 runs
  that many Lanczos steps on H and uses its top Ritz pairs (:mod:`eif.influence.krylov`).
  H can be indefinite (the losses normalise z): a damping that leaves H + damping I indefinite is an
  error, found by Lanczos's smallest eigenvalue, the coarse block's Cholesky, or negative curvature
  met by CG.
- ``exact``: a dense solve of (H + damping I), for small heads (E * D <= 8192).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch.func import grad, vmap

from eif.influence.confusion import ConfusionBatch, distance_and_grad
from eif.influence.task import ConfusionTask, head
from eif.losses.base import MetricLoss
from eif.settings import DISPLAY, SPEED, Settings, setting
from eif.utils.errors import EifError, require

EXACT_MAX_PARAMS = 8192
# if.scale=auto: scale = 2 max_i |H_i|_2. A step multiplies h along an eigenvector of H_i by
# 1 - damping - lambda/scale, stable for 0 <= lambda < (2 - damping) scale; at 2x the largest curvature
# lambda/scale <= 1/2, which leaves a 4x margin for the power-iteration estimate being low.
AUTO_SCALE_FACTOR = 2.0


class IfConfig(Settings):
    """``if`` settings: the solver of (H + lambda I) x = v and its settings (see the module doc).

    ``lissa``: ``scale``, ``damping`` (its fixed point has lambda = scale * damping), ``block_size``,
    ``step_threads`` (torch threads for its sequential steps; None leaves torch's setting alone).
    ``cg``: ``damping`` is lambda, ``cg_tol`` the relative residual to reach, and at most one shared
    preconditioner: ``coarse`` > 0, the feature-side rank of a Kronecker coarse space (with ``coarse_e``
    embedding-side directions; :mod:`eif.influence.coarse`), or ``deflate`` > 0, the Lanczos steps
    whose top Ritz pairs precondition every solve (both 0: plain CG).
    Every solver's result records the relative residual of its own linear system per confusion; a
    median above ``warn_residual`` prints one warning line."""

    solver: Literal["lissa", "cg", "exact"] = "lissa"
    scale: PositiveFloat | Literal["auto"] = 500.0  # a number (the reference: 500) or "auto"
    damping: NonNegativeFloat = 0.01
    cg_tol: PositiveFloat = 1e-6
    cg_max_iter: PositiveInt = 500
    deflate: NonNegativeInt = 0
    coarse: NonNegativeInt = 0
    coarse_e: PositiveInt = 128
    warn_residual: PositiveFloat = setting(1e-2, unkeyed=DISPLAY)
    block_size: PositiveInt = setting(256, unkeyed=SPEED)
    k_chunk: PositiveInt = setting(100, unkeyed=SPEED)
    score_chunk: PositiveInt = setting(256, unkeyed=SPEED)
    step_threads: PositiveInt | None = setting(None, unkeyed=SPEED)

    @model_validator(mode="after")
    def _one_preconditioner(self) -> IfConfig:
        if self.coarse and self.deflate:
            raise ValueError(
                f"coarse={self.coarse} and deflate={self.deflate} are two preconditioners; set one to 0"
            )
        return self

    @property
    def effective_damping(self) -> float | None:
        """lambda of the system the solver converges to (None: lissa with scale=auto, not yet resolved)."""
        if self.solver == "lissa":
            return None if self.scale == "auto" else float(self.scale) * self.damping
        return self.damping


@dataclass
class IfResult:
    """``scores`` (K, N); ``d0`` (K,); ``iterations`` (K,) solver iterations (lissa: N steps);
    ``residual`` (K,) relative residual |(H + lambda I) x - v| / |v| of the system the solver targets;
    ``scale`` the LiSSA scale used (``if.scale=auto`` resolved; nan otherwise); ``info`` diagnostics
    (lambda, residual summary, Lanczos spectrum, LiSSA's per-sample curvatures against 2 * scale)."""

    scores: torch.Tensor
    d0: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    scale: float = float("nan")
    info: dict = field(default_factory=dict)


def loss_grad_z(task: ConfusionTask, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g_i = dL_i/dz_i for all samples: z (N, E) -> (N, E) (losses are independent across samples)."""
    return grad(lambda q: task.train_loss(q, y).sum())(z)


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
    ell = lambda cc, yy: loss.per_sample_cos(cc[None], yy[None])[0]  # noqa: E731
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
    from torch.func import jvp

    from eif.influence.softmax_curvature import SoftmaxCurvature

    if loss.cos_logit_scale() is not None:
        return SoftmaxCurvature.build(loss, z, y).apply(slice(None), t)
    pu = loss.cosine_targets()  # (M, E)
    inv_r2 = 1.0 / z.pow(2).sum(-1)
    u = z * inv_r2.sqrt()[:, None]
    c = u @ pu.T  # (b, M)

    def ell(cc: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return loss.per_sample_cos(cc[None], yy[None])[0]

    def hess_c(cc: torch.Tensor, yy: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
        return jvp(lambda x: grad(ell)(x, yy), (cc,), (ww,))[1]

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
        per = lambda q, yy: task.train_loss(q[None], yy[None])[0]  # noqa: E731
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


def lissa(
    task: ConfusionTask,
    features: torch.Tensor,
    z: torch.Tensor,
    y: torch.Tensor,
    v_factors: tuple[torch.Tensor, torch.Tensor],
    scale: float,
    damping: float,
    block_size: int,
    progress: bool = False,
    sub_block: int = 16,
    curvature_chunk: int = 64,
    factored: bool | None = None,
    step_threads: int | None = None,
) -> torch.Tensor:
    """The reference LiSSA pass (see module doc) for K right-hand sides v_k = G_k^T F_p,k.

    ``features`` (N, D), ``z`` (N, E), ``y`` (N,), ``v_factors`` = (G (K, R, E), F_p (K, R, D)).
    Returns h_N / scale (K, E, D). Per block of B = ``block_size`` samples: one GEMM reads h f_j; each
    step applies H_z,j to the K rows r_j (``factored``, default: a loss with a cosine form and
    M + 2 < E / 2: as three
    thin products with its factors B S B^T - sigma I, else one (K, E) x (E, E) product with the dense
    H_z,j), after the in-block correction (one GEMM per ``sub_block`` steps for the earlier sub-blocks,
    one gemv for the current one); curvatures come ``curvature_chunk`` samples per batched call; all
    into preallocated buffers; one GEMM applies the block's updates.
    Memory: K E D + B K E + curvature_chunk E max(E, M).
    """
    from tqdm.auto import tqdm

    g, fp = v_factors
    k, _, e = g.shape
    n, dim = features.shape
    c = 1.0 - damping
    # h = beta * h_t + gamma * v with v = G^T F_p never materialised (rank R per confusion)
    h_t = g.new_zeros(k, e, dim)
    h_flat = h_t.view(k * e, dim)
    beta, gamma = 1.0, 1.0
    bs = max(1, min(int(block_size), n))
    sub, hchunk = max(1, int(sub_block)), max(1, min(int(curvature_chunk), bs))
    idx = torch.arange(bs + 1, dtype=torch.float64)
    cpow64 = c**idx
    alpha64 = (1 - cpow64) / damping if damping > 0 else idx
    cpow, alpha = cpow64.to(z), alpha64.to(z)
    # decay[j, i] = c^(j-1-i) for i < j, else 0: how u_i reaches step j inside a block
    decay = torch.tril(c ** (idx[:bs, None] - 1 - idx[None, :bs]).clamp_min(0), diagonal=-1).to(z)
    loss = task.cos_loss
    targets = None if loss is None else loss.cosine_targets()  # (M, E)
    m = -1 if targets is None else targets.shape[0]
    lowrank = loss is not None and (m + 2 < e // 2 if factored is None else factored)
    if lowrank:
        assert loss is not None and targets is not None
        basis = z.new_empty(hchunk, e, m + 2)  # B_j = [P^^T | u_j | q_j]
        basis[:, :, :m] = targets.T
        y_buf, ys_buf = z.new_empty(k, m + 2), z.new_empty(k, m + 2)
    else:
        hz = z.new_empty(hchunk, e, e)
    u = z.new_empty(bs, k, e)  # u_j = H_z,j r_j
    uf = u.view(bs, k * e)
    r_buf = z.new_empty(bs, k * e)  # r_j, reused across blocks (a fresh one page-faults every block)
    threads = torch.get_num_threads()
    steps = threads if step_threads is None else int(step_threads)  # the caller's choice, restored after
    try:
        for start in tqdm(range(0, n, bs), desc="LiSSA", disable=not progress, leave=False):
            fb = features[start : start + bs]
            nb = len(fb)
            zb, yb = z[start : start + nb], y[start : start + nb]
            # r_j before the in-block correction: alpha_j v f_j + c^j h_start f_j, h_start = beta h_t +
            # gamma v; the per-step factors scale the rows of f_b before the products (no pass over r)
            if start:
                rf = torch.mm(fb * (beta * cpow[:nb])[:, None], h_flat.T, out=r_buf[:nb])
            else:  # h_t = 0 before the first block: no GEMM
                rf = r_buf[:nb].zero_()
            r = rf.view(nb, k, e)
            r.add_(torch.einsum("kre,krb->bke", g, fp @ (fb * (alpha[:nb] + gamma * cpow[:nb])[:, None]).T))
            corr = decay[:nb, :nb] * (fb @ fb.T) / scale  # corr[j, i] = c^(j-1-i) (f_i . f_j) / scale
            _set_threads(steps)  # the sequential steps: small ops; fewer threads avoid OpenMP barriers
            for j in range(nb):
                jh, j0 = j % hchunk, j - j % sub
                if jh == 0:
                    zc, yc = zb[j : j + hchunk], yb[j : j + hchunk]
                    if lowrank:
                        uq, core, sigma = curvature_factors(loss, zc, yc)
                        basis[: len(zc), :, m:] = uq
                        sigma = sigma.tolist()
                    else:
                        curvature_z(task, zc, yc, out=hz[: len(zc)])
                if j == j0 and j:  # the earlier sub-blocks' updates, for the whole sub-block at once (a GEMM)
                    _set_threads(threads)
                    rf[j : j + sub].addmm_(corr[j : j + sub, :j], uf[:j], alpha=-1.0)
                    _set_threads(steps)
                if j > j0:
                    rf[j].addmv_(uf[j0:j].T, corr[j, j0:j], alpha=-1.0)
                if lowrank:  # u_j = B S B^T r_j - sigma r_j, row-wise
                    torch.mm(r[j], basis[jh], out=y_buf)
                    torch.mm(y_buf, core[jh].mT, out=ys_buf)
                    torch.addmm(r[j], ys_buf, basis[jh].mT, beta=-sigma[jh], out=u[j])
                else:
                    torch.mm(r[j], hz[jh].mT, out=u[j])
            _set_threads(threads)
            beta *= c**nb
            gamma = gamma * c**nb + float(alpha64[nb])
            coef = cpow[:nb].flip(0) / (scale * beta)  # c^(nb-1-j) / (scale beta)
            h_flat.addmm_(uf[:nb].T, fb * coef[:, None], alpha=-1.0)
            if beta < 1e-4:  # fold the decay into h_t before it underflows
                h_t.mul_(beta)
                beta = 1.0
    finally:  # an error inside the steps must not leave torch on one thread
        _set_threads(threads)
    # h_N / scale in place: no fresh (K, E, D) allocations (their page faults cost whole GEMMs)
    return h_t.mul_(beta / scale).baddbmm_(g.transpose(1, 2), fp, alpha=gamma / scale)


def _set_threads(n: int) -> None:
    """torch's intra-op thread count (OpenMP and MKL); cheap (< 1 us), so it can change around one op."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def exact_hessian(
    task: ConfusionTask, features: torch.Tensor, z: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Dense H (E*D, E*D) of the mean training loss w.r.t. W (row-major (e, d) flattening)."""
    n, dim = features.shape
    e = z.shape[1]
    require(e * dim <= EXACT_MAX_PARAMS, f"exact IF solver needs E*D <= {EXACT_MAX_PARAMS}, got {e}*{dim}")
    hz = vmap(torch.func.hessian(lambda q, yy: task.train_loss(q[None], yy[None])[0]))(z, y)  # (N, E, E)
    h = torch.einsum("nab,nc,nd->acbd", hz, features, features) / n
    return h.reshape(e * dim, e * dim)


def _scores(x: torch.Tensor, features: torch.Tensor, gz: torch.Tensor, chunk: int) -> torch.Tensor:
    """score_ki = g_i^T (X_k f_i): X (K, E, D), features (N, D), gz (N, E) -> (K, N), chunked over N.

    Per chunk one GEMM f X^T into a reused (n, K E) buffer (no fresh allocation per chunk) and one
    batched matvec with g_i that reads it once."""
    k, e, dim = x.shape
    n = len(features)
    x_flat = x.reshape(k * e, dim)
    out = x.new_empty(n, k)
    buf = x.new_empty(min(chunk, n) * k * e)
    for s in range(0, n, chunk):
        f = features[s : s + chunk]
        xf = torch.mm(f, x_flat.T, out=buf[: len(f) * k * e].view(len(f), k * e))
        torch.bmm(xf.view(len(f), k, e), gz[s : s + chunk, :, None], out=out[s : s + chunk, :, None])
    return out.T


def classic_influence(
    task: ConfusionTask,
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    test_features: torch.Tensor,
    batch: ConfusionBatch,
    cfg: IfConfig | None = None,
    progress: bool = False,
) -> IfResult:
    """IF scores (K, N) for all confusions of ``batch`` with ``cfg.solver``, and how well each linear
    system was solved (see the module doc)."""
    from eif.influence.coarse import KroneckerCoarse
    from eif.influence.hessian import HeadHessian
    from eif.influence.krylov import lanczos, pcg

    cfg = IfConfig() if cfg is None else cfg
    auto = cfg.scale == "auto"
    require(cfg.solver != "lissa" or cfg.damping < 1, "LiSSA needs damping < 1 (its decay is 1 - damping)")
    require(cfg.solver == "lissa" or cfg.damping > 0, f"the {cfg.solver} IF solver needs damping > 0")
    n, dim = train_features.shape
    require(
        cfg.solver != "exact" or weight.numel() <= EXACT_MAX_PARAMS,
        f"the exact IF solver needs E*D <= {EXACT_MAX_PARAMS}, got {tuple(weight.shape)}; "
        "use methods.if.solver=cg or lissa",
    )
    z = head(train_features, weight, bias)
    gz = loss_grad_z(task, z, train_labels)  # (N, E)
    hess = HeadHessian(task, train_features, z, train_labels)
    info: dict = {"solver": cfg.solver}
    scale = float("nan")
    if cfg.solver == "lissa":
        curv = hess.sample_curvature()
        scale = AUTO_SCALE_FACTOR * float(curv.max()) if auto else float(cfg.scale)
        info["curvature"] = {
            "max": float(curv.max()),
            "median": float(curv.median()),
            "above_2_scale": int((curv > 2 * scale).sum()),
            "n": n,
        }
    lam = scale * cfg.damping if cfg.solver == "lissa" else cfg.damping
    system = hess.with_damping(lam)
    info["damping_effective"] = lam
    h_dense = spectrum = coarse = None
    if cfg.solver == "exact":
        h_dense = exact_hessian(task, train_features, z, train_labels)
        h_dense = h_dense + lam * torch.eye(weight.numel(), dtype=h_dense.dtype, device=h_dense.device)
    elif cfg.solver == "cg" and cfg.coarse > 0:
        coarse = KroneckerCoarse.build(hess, lam, int(cfg.coarse), int(cfg.coarse_e))
        info["coarse"] = coarse.info
    elif cfg.solver == "cg" and cfg.deflate > 0:
        spectrum = lanczos(
            hess.matvec,
            (weight.shape[0], dim),
            cfg.deflate,
            keep=cfg.deflate // 2,
            dtype=weight.dtype,
            device=weight.device,
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
    scores, d0s, iters, residuals = [], [], [], []
    for start in range(0, len(batch), max(1, int(cfg.k_chunk))):
        sub = batch.select(slice(start, start + int(cfg.k_chunk)))
        fp = sub.features(test_features)
        d0, g = distance_and_grad(task, head(fp, weight, bias), sub)
        g = g * sub.sign[:, None, None]  # gradient of the objective sign * d
        v = torch.einsum("kre,krd->ked", g, fp)
        if cfg.solver == "lissa":
            x = lissa(
                task,
                train_features,
                z,
                train_labels,
                (g, fp),
                scale,
                cfg.damping,
                int(cfg.block_size),
                progress,
                step_threads=cfg.step_threads,
            )
            it = torch.full((len(sub),), n, dtype=torch.long)
            # the row sums are finite iff no entry is inf/nan (or they overflow, which is divergence too);
            # one read of X at full bandwidth, where isfinite(X) cost ~10 head passes
            if not bool(torch.isfinite(x.flatten(1).sum(1)).all()):
                top = info["curvature"]["max"]
                hint = f"methods.if.scale={AUTO_SCALE_FACTOR * top:.0f} or methods.if.scale=auto"
                raise EifError(
                    f"LiSSA diverged with methods.if.scale={scale:.4g}: the largest per-sample curvature is "
                    f"about {top:.3g}; raise the scale (e.g. {hint}) or use a converged IF "
                    "(e.g. methods=[eif,if_converged])"
                )
        if cfg.solver == "cg":
            # from zero: the first preconditioned direction already holds the Ritz-span solution, and a
            # warm start would cost one more product; the recurrence's residual is the true one to
            # float32 round-off (tests/test_methods.py), so no product is spent on checking it
            sol = pcg(
                system.matvec,
                v,
                lam,
                cfg.cg_tol,
                cfg.cg_max_iter,
                spectrum,
                warm_start=False,
                precondition=coarse.apply if coarse is not None else None,
            )
            x, it, res = sol.x, sol.iterations, sol.residual
        else:
            if cfg.solver == "exact":
                assert h_dense is not None
                x = torch.linalg.solve(h_dense, v.reshape(len(sub), -1).T).T.reshape(v.shape)
                it = torch.ones(len(sub), dtype=torch.long)
            res = system.matvec(x).sub_(v).flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1).clamp_min(1e-30)
        scores.append(_scores(x, train_features, gz, int(cfg.score_chunk)))
        d0s.append(d0)
        iters.append(it.cpu())
        residuals.append(res.cpu())
    residual = torch.cat(residuals)
    info.update(
        residual_median=float(residual.median()),
        residual_max=float(residual.max()),
        iterations_median=float(torch.cat(iters).float().median()),
        hessian_products=hess.products,
        curvature_form=hess.form,
    )
    return IfResult(torch.cat(scores), torch.cat(d0s), torch.cat(iters), residual, scale, info)
