"""Classic influence functions (paper Eq. 4; PROTOCOL.md section 6) on cached features, batched over K.

score_i = grad_W obj^T H^-1 grad_W L_i, obj = sign * d, H the Hessian of the mean training loss
w.r.t. the head weight W. This is the paper's Eq. 4 with the sign **flipped**, so that, as for EIF,
**positive = harmful** (up-weighting sample i would pull a confusion pair closer). The reference's
IF code reports the opposite sign.

Structure used everywhere: with z_i = W f_i + b, grad_W L_i = g_i f_i^T (g_i = dL_i/dz_i), the
per-sample Hessian is H_i V = (H_z,i V f_i) f_i^T (H_z,i = d^2 L_i/dz_i^2, E x E, applied by
double backprop), grad_W obj_k = G_k^T F_p,k, and score_ki = g_i^T (X_k f_i).

Solvers for X = H^-1 v:
- ``lissa``: the reference recursion, one pass over the training set at batch 1 in index order:
  h_0 = v, h_t = v + (1 - damping) h_{t-1} - H_t h_{t-1} / scale, X = h_N / scale. Its fixed point
  is (H + scale * damping I)^-1 v. Run in blocks of B samples: the reads h f_j need h at the block
  start (one GEMM) plus the rank-1 updates made earlier in the block (a B x B feature Gram); the
  block's updates are applied with one GEMM. The decay and the +v terms are kept as two scalars
  (h = beta * H~ + gamma * v). This is the sequential recursion, reassociated.
- ``cg``: conjugate gradients on (H + damping I) X = v to relative residual ``cg_tol``. H can be
  indefinite (the losses normalise z): CG stops with an error on negative curvature.
- ``exact``: a dense solve of (H + damping I), for small heads (E * D <= 8192).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, vmap

from eif.influence.confusion import ConfusionBatch, distance_and_grad
from eif.influence.task import ConfusionTask, head
from eif.utils.errors import EifError, require

EXACT_MAX_PARAMS = 8192


@dataclass(frozen=True)
class IfConfig:
    solver: str = "lissa"
    scale: float = 500.0
    damping: float = 0.01
    cg_tol: float = 1e-6
    cg_max_iter: int = 500
    block_size: int = 64
    k_chunk: int = 100
    score_chunk: int = 2048


@dataclass
class IfResult:
    """``scores`` (K, N); ``d0`` (K,); ``iterations`` (K,) solver iterations (lissa: N steps)."""

    scores: torch.Tensor
    d0: torch.Tensor
    iterations: torch.Tensor


def loss_grad_z(task: ConfusionTask, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g_i = dL_i/dz_i for all samples: z (N, E) -> (N, E) (losses are independent across samples)."""
    return grad(lambda q: task.train_loss(q, y).sum())(z)


def hvp_z(task: ConfusionTask, z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """H_z,i t_ki for every i and k: z (N, E), y (N,), tangents t (K, N, E) -> (K, N, E).

    Double backprop on K independent copies of z (the losses are per-sample with fixed proxies, so
    copy (k, i) only sees its own row): two autograd calls, no per-k transform overhead.
    """
    with torch.enable_grad():
        zk = z.detach().expand(t.shape).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(task.train_loss(zk, y).sum(), zk, create_graph=True)
        (hv,) = torch.autograd.grad(g, zk, grad_outputs=t)
    return hv


def lissa(task: ConfusionTask, features: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
          v_factors: tuple[torch.Tensor, torch.Tensor], scale: float, damping: float, block_size: int,
          progress: bool = False) -> torch.Tensor:
    """The reference LiSSA pass (see module doc) for K right-hand sides v_k = G_k^T F_p,k.

    ``features`` (N, D), ``z`` (N, E), ``y`` (N,), ``v_factors`` = (G (K, R, E), F_p (K, R, D)).
    Returns h_N / scale (K, E, D).
    """
    from tqdm.auto import tqdm

    g, fp = v_factors
    k, _, e = g.shape
    n, dim = features.shape
    c = 1.0 - damping
    v = torch.einsum("kre,krd->ked", g, fp)
    h_t = torch.zeros_like(v)  # h = beta * h_t + gamma * v
    beta, gamma = 1.0, 1.0
    blocks = range(0, n, block_size)
    for start in tqdm(blocks, desc="LiSSA", disable=not progress, leave=False):
        fb = features[start:start + block_size]
        nb = len(fb)
        zb, yb = z[start:start + nb], y[start:start + nb]
        vf = torch.einsum("kre,krb->bke", g, fp @ fb.T)  # v f_j, (nb, K, E)
        hf = beta * (fb @ h_t.view(k * e, dim).T).view(nb, k, e) + gamma * vf  # h_start f_j
        gram = fb @ fb.T
        cpow = c ** torch.arange(nb + 1, dtype=torch.float64)
        alpha = (1 - cpow) / damping if damping > 0 else torch.arange(nb + 1, dtype=torch.float64)
        cpow, alpha = cpow.to(z), alpha.to(z)
        u = z.new_zeros(nb, k, e)  # u_j = H_z,j r_j, contiguous per step
        for j in range(nb):
            r = alpha[j] * vf[j] + cpow[j] * hf[j]
            if j:
                coef = cpow[:j].flip(0) * gram[:j, j]  # c^(j-1-i) (f_i . f_j)
                r = r - torch.tensordot(coef, u[:j], dims=1) / scale
            u[j] = hvp_z(task, zb[j:j + 1], yb[j:j + 1], r[:, None])[:, 0]
        beta *= c**nb
        gamma = gamma * c**nb + float(alpha[nb])
        coef = cpow[:nb].flip(0) / (scale * beta)
        ut = (u * coef[:, None, None]).permute(1, 2, 0).reshape(k * e, nb)
        h_t.view(k * e, dim).addmm_(ut, fb, alpha=-1.0)
        if beta < 1e-4:  # fold the decay into h_t before it underflows
            h_t.mul_(beta)
            beta = 1.0
    return (beta * h_t + gamma * v) / scale


def max_curvature(task: ConfusionTask, features: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
                  iters: int = 30) -> float:
    """max_i of |H_i|_2 = |H_z,i|_2 ||f_i||^2, by power iteration on every H_z,i at once (an estimate)."""
    t = torch.randn(1, *z.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(z)
    lam = z.new_zeros(len(z))
    for _ in range(iters):
        u = hvp_z(task, z, y, t)[0]
        lam = u.norm(dim=-1)
        t = (u / lam.clamp_min(1e-30)[:, None])[None]
    return float((lam * features.pow(2).sum(-1)).max())


def _cg(matvec: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, tol: float,
        max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched conjugate gradients for K SPD systems; v (K, ...). Returns (x, iterations (K,))."""
    dot = lambda a, b: (a * b).flatten(1).sum(1)  # noqa: E731
    x = torch.zeros_like(v)
    r = v.clone()
    p = r.clone()
    rs = dot(r, r)
    target = tol**2 * rs
    iters = torch.zeros(len(v), dtype=torch.long)
    for _ in range(max_iter):
        active = rs > target
        if not bool(active.any()):
            break
        ap = matvec(p)
        pap = dot(p, ap)
        if bool((active & (pap <= 0)).any()):
            raise EifError("if.solver=cg met negative curvature: H + damping I is not positive definite "
                           "(the loss is non-convex in W); raise if.damping or use if.solver=lissa or exact")
        alpha = torch.where(active, rs / torch.where(active, pap, 1), 0)
        x = x + alpha.view(-1, *[1] * (v.dim() - 1)) * p
        r = r - alpha.view(-1, *[1] * (v.dim() - 1)) * ap
        rs_new = dot(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(v.dtype).tiny), 0)
        p = r + beta.view(-1, *[1] * (v.dim() - 1)) * p
        rs = torch.where(active, rs_new, rs)
        iters += active.long().cpu()
    return x, iters


def _hessian_matvec(task: ConfusionTask, features: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
                    damping: float, chunk: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """X (K, E, D) -> (H + damping I) X with H X = mean_i (H_z,i X f_i) f_i^T, chunked over N."""
    n = len(features)

    def matvec(x: torch.Tensor) -> torch.Tensor:
        out = damping * x
        for s in range(0, n, chunk):
            f = features[s:s + chunk]
            t = torch.einsum("ked,nd->kne", x, f)
            out = out + torch.einsum("kne,nd->ked", hvp_z(task, z[s:s + chunk], y[s:s + chunk], t), f) / n
        return out

    return matvec


def exact_hessian(task: ConfusionTask, features: torch.Tensor, z: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor:
    """Dense H (E*D, E*D) of the mean training loss w.r.t. W (row-major (e, d) flattening)."""
    n, dim = features.shape
    e = z.shape[1]
    require(e * dim <= EXACT_MAX_PARAMS, f"exact IF solver needs E*D <= {EXACT_MAX_PARAMS}, got {e}*{dim}")
    hz = vmap(torch.func.hessian(lambda q, yy: task.train_loss(q[None], yy[None])[0]))(z, y)  # (N, E, E)
    h = torch.einsum("nab,nc,nd->acbd", hz, features, features) / n
    return h.reshape(e * dim, e * dim)


def _scores(x: torch.Tensor, features: torch.Tensor, gz: torch.Tensor, chunk: int) -> torch.Tensor:
    """score_ki = g_i^T (X_k f_i): X (K, E, D), features (N, D), gz (N, E) -> (K, N), chunked over N."""
    k, e, dim = x.shape
    out = []
    for s in range(0, len(features), chunk):
        xf = (x.reshape(k * e, dim) @ features[s:s + chunk].T).view(k, e, -1)
        out.append(torch.einsum("ken,ne->kn", xf, gz[s:s + chunk]))
    return torch.cat(out, 1)


def classic_influence(task: ConfusionTask, train_features: torch.Tensor, train_labels: torch.Tensor,
                      weight: torch.Tensor, bias: torch.Tensor, test_features: torch.Tensor,
                      batch: ConfusionBatch, cfg: IfConfig = IfConfig(), progress: bool = False) -> IfResult:
    """IF scores (K, N) for all confusions of ``batch`` with ``cfg.solver`` (see module doc)."""
    require(cfg.solver in ("lissa", "cg", "exact"),
            f"if.solver must be lissa, cg or exact, got {cfg.solver!r}")
    require(cfg.scale > 0 and cfg.damping >= 0, "if.scale must be > 0 and if.damping >= 0")
    require(cfg.solver != "lissa" or cfg.damping < 1, "LiSSA needs if.damping < 1 (its decay is 1 - damping)")
    n, dim = train_features.shape
    require(cfg.solver != "exact" or weight.numel() <= EXACT_MAX_PARAMS,
            f"the exact IF solver needs E*D <= {EXACT_MAX_PARAMS}, got {tuple(weight.shape)}; "
            "use if.solver=cg or lissa")
    z = head(train_features, weight, bias)
    gz = loss_grad_z(task, z, train_labels)  # (N, E)
    h_dense = None
    if cfg.solver == "exact":
        e = weight.shape[0]
        h_dense = exact_hessian(task, train_features, z, train_labels)
        h_dense = h_dense + cfg.damping * torch.eye(e * dim, dtype=h_dense.dtype, device=h_dense.device)
    scores, d0s, iters = [], [], []
    for start in range(0, len(batch), max(1, int(cfg.k_chunk))):
        sub = batch.select(slice(start, start + int(cfg.k_chunk)))
        fp = sub.features(test_features)
        d0, g = distance_and_grad(task, head(fp, weight, bias), sub)
        g = g * sub.sign[:, None, None]  # gradient of the objective sign * d
        if cfg.solver == "lissa":
            x = lissa(task, train_features, z, train_labels, (g, fp), cfg.scale, cfg.damping,
                      int(cfg.block_size), progress)
            it = torch.full((len(sub),), n, dtype=torch.long)
            if not bool(torch.isfinite(x).all()):
                curv = max_curvature(task, train_features, z, train_labels)
                raise EifError(f"LiSSA diverged with if.scale={cfg.scale}: the largest per-sample curvature "
                               f"is about {curv:.3g}; set if.scale above it (e.g. if.scale={2 * curv:.0f}) "
                               "or use if.solver=cg")
        else:
            v = torch.einsum("kre,krd->ked", g, fp)
            if cfg.solver == "cg":
                mv = _hessian_matvec(task, train_features, z, train_labels, cfg.damping, int(cfg.score_chunk))
                x, it = _cg(mv, v, cfg.cg_tol, int(cfg.cg_max_iter))
            else:
                assert h_dense is not None
                x = torch.linalg.solve(h_dense, v.reshape(len(sub), -1).T).T.reshape(v.shape)
                it = torch.ones(len(sub), dtype=torch.long)
        s = _scores(x, train_features, gz, int(cfg.score_chunk))
        scores.append(s)
        d0s.append(d0)
        iters.append(it)
    return IfResult(scores=torch.cat(scores), d0=torch.cat(d0s), iterations=torch.cat(iters))
