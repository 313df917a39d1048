# pyright: strict
"""EIF (paper Eq. 5-6; docs/protocol.md, EIF) on cached trunk features, batched over K confusions.

theta_max moves the head weight W by plain gradient ascent on the confusion's objective (sign * d;
sign = +1 for a confusion pair/group): W <- W + lr * grad_W, up to ``max_steps`` steps, stopping (per
confusion) at the start of a step once |d(W) - d(W0)| >= ``stop_delta``. ``num_thetas`` >= 2 adds
theta_min (descent) and then random directions in the confusion's feature span, each orthogonal (in
the Frobenius inner product) to the earlier ones and on the sphere of radius ||theta_max - W0||_F.

Score of training sample i: mean over theta of dL_i * sign * dd (divided by ||theta - W0||_F when
``normalize``), dL_i the change of its per-sample training loss (loss parameters and bias fixed).
**Positive = harmful**: the sample's loss rises when the confusion is repaired (reference sign).

Low-rank structure: grad_W d_k = G_k^T F_p,k with F_p,k (r, D) the confusion's member features, so
every displacement is W - W0 = A F_p with A (E, r). The ascent, d, the stopping rule and
||W - W0||_F^2 = tr(A (F_p F_p^T) A^T) live in r-space, and every training embedding moves by
(F_train F_p^T) A^T: one (N, D) x (D, sum r) matmul per chunk of confusions.

When the loss has the cosine form (``task.cos_loss``: it depends on z only through cos(z, p^_m), p^_m
its M unit ``cosine_targets()``, e.g. unit proxies), the moved embeddings
z'_ik = z_i + P_ik A_k^T (P = F_train F_p^T, (N, K, r)) are never formed: z'.p^_m =
(Z P^^T)_im + P_ik (A_k^T P^^T)_:m and |z'|^2 = |z_i|^2 + 2 P_ik (A_k^T z_i) + P_ik (A_k^T A_k) P_ik^T,
O(N r (M + r)) per confusion plus one (N, E) x (E, K r) product, instead of O(N E M) on (K, N, E).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import PositiveFloat, PositiveInt
from tqdm.auto import tqdm

from eif.influence.confusion import ConfusionBatch, confusion_distance, distance_and_grad
from eif.influence.problem import AttributionProblem
from eif.influence.task import ConfusionTask, head
from eif.losses.base import MetricLoss
from eif.settings import SPEED, Settings, setting
from eif.utils.errors import require

COS_SLICE = 1 << 19  # cosines per slice of the low-rank loss evaluation (2 MiB: one core's L2)
GENERIC_K = 16  # confusions per (K, N, E) moved-embedding tensor on the generic path


class EifConfig(Settings):
    """``methods.eif``: theta_max by ``max_steps`` gradient steps of size ``lr`` (stopping once
    |d - d0| >= ``stop_delta``); ``num_thetas`` 2 adds theta_min, more add random orthogonal
    directions; ``normalize`` divides by ||theta - W0||_F; ``k_chunk`` confusions at a time."""

    lr: PositiveFloat = 1e-3
    max_steps: PositiveInt = 50
    stop_delta: PositiveFloat = 1.0
    num_thetas: PositiveInt = 1
    normalize: bool = False
    k_chunk: PositiveInt = setting(100, unkeyed=SPEED)
    seed: int = 0


@dataclass
class EifResult:
    """``scores`` (K, N); ``d0`` (K,); per theta (K, M): ``d_theta``, ``delta_d`` = d_theta - d0,
    ``theta_norm`` = ||theta - W0||_F, ``steps`` (gradient steps taken; 0 for random directions)."""

    scores: torch.Tensor
    d0: torch.Tensor
    d_theta: torch.Tensor
    delta_d: torch.Tensor
    theta_norm: torch.Tensor
    steps: torch.Tensor


def _inner(x: torch.Tensor, gram: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """<X F_p, Y F_p>_F = tr(X gram Y^T) for X, Y (K, E, R), gram (K, R, R) -> (K,)."""
    return torch.einsum("ker,krs,kes->k", x, gram, y)


def _walk(
    task: ConfusionTask,
    z0: torch.Tensor,
    gram: torch.Tensor,
    batch: ConfusionBatch,
    direction: float,
    cfg: EifConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ascent (direction +1) or descent (-1) on sign * d in r-space: (A (K, E, R), steps (K,))."""
    k, r, e = z0.shape
    a = z0.new_zeros(k, e, r)
    steps = torch.zeros(k, dtype=torch.long, device=z0.device)
    active = torch.ones(k, dtype=torch.bool, device=z0.device)
    d0 = None
    for _ in range(cfg.max_steps):
        d, g = distance_and_grad(task, z0 + gram @ a.transpose(1, 2), batch)
        d0 = d if d0 is None else d0
        active &= (d - d0).abs() < cfg.stop_delta
        if not bool(active.any()):
            break
        scale = cfg.lr * direction * batch.sign * active.to(z0.dtype)
        a = a + scale[:, None, None] * g.transpose(1, 2)
        steps += active.long()
    return a, steps


def _thetas(
    task: ConfusionTask,
    z0: torch.Tensor,
    gram: torch.Tensor,
    batch: ConfusionBatch,
    cfg: EifConfig,
    gen: torch.Generator,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The displacements A_m (K, E, R) of theta_max, theta_min, then orthogonal random directions."""
    a_max, s_max = _walk(task, z0, gram, batch, 1.0, cfg)
    dirs, steps = [a_max], [s_max]
    if cfg.num_thetas >= 2:
        a_min, s_min = _walk(task, z0, gram, batch, -1.0, cfg)
        dirs.append(a_min)
        steps.append(s_min)
    radius = _inner(a_max, gram, a_max).clamp_min(0).sqrt()
    mask = batch.valid.to(z0.dtype).unsqueeze(1)
    for _ in range(2, cfg.num_thetas):
        x = torch.randn(a_max.shape, generator=gen, dtype=torch.float64).to(z0) * mask
        basis: list[
            torch.Tensor
        ] = []  # Gram-Schmidt against every earlier direction, in the Frobenius inner product
        for u in dirs:
            for q in basis:
                u = u - (_inner(u, gram, q))[:, None, None] * q
            nu = _inner(u, gram, u).clamp_min(0).sqrt()
            basis.append(torch.where(nu[:, None, None] > 0, u / nu.clamp_min(1e-30)[:, None, None], 0))
        for q in basis:
            x = x - _inner(x, gram, q)[:, None, None] * q
        nx = _inner(x, gram, x).clamp_min(0).sqrt()
        dirs.append(x * (radius / nx.clamp_min(1e-30))[:, None, None])
        steps.append(torch.zeros_like(s_max))
    return dirs, torch.stack(steps, 1)


@dataclass(frozen=True)
class _CosPieces:
    """The unmoved training embeddings in cosine form: cosine targets ``pu`` (M, E), ``z`` (N, E),
    ``zp`` = Z P^^T (N, M), ``zsq`` = |z_i|^2 (N,), labels ``y`` (N,), losses ``loss0`` (N,)."""

    loss: MetricLoss
    pu: torch.Tensor
    z: torch.Tensor
    zp: torch.Tensor
    zsq: torch.Tensor
    y: torch.Tensor
    loss0: torch.Tensor

    @staticmethod
    def build(loss: MetricLoss, z: torch.Tensor, y: torch.Tensor) -> _CosPieces:
        pu = loss.cosine_targets()
        zp = z @ pu.T
        zsq = z.pow(2).sum(-1)
        return _CosPieces(loss, pu, z, zp, zsq, y, loss.per_sample_cos(zp / _safe_norm(zsq)[:, None], y))

    def dloss(self, proj: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """L_i(z_i + proj_ik a_k^T) - L_i(z_i) (K, N) for proj (K, N, R), displacements a (K, E, R).

        Works on slices of about ``COS_SLICE`` (K, n, M) cosines, so that the elementwise loss runs in
        one core's cache (benchmarks/README.md has the measurements behind the size)."""
        k, e, r = a.shape
        ap = a.transpose(1, 2) @ self.pu.T  # A_k^T P^^T (K, R, M)
        ata = a.transpose(1, 2) @ a  # (K, R, R)
        za = (self.z @ a.permute(1, 0, 2).reshape(e, k * r)).view(-1, k, r).transpose(0, 1)  # (K, N, R)
        out = self.zsq.new_empty(k, len(self.z))
        rows = max(1, COS_SLICE // (k * ap.shape[-1]))
        for s in range(0, len(self.z), rows):
            pr, sl = proj[:, s : s + rows], slice(s, s + rows)
            dot = torch.baddbmm(self.zp[sl], pr, ap)  # z'.p^ (K, n, M)
            sq = self.zsq[sl] + 2 * (pr * za[:, sl]).sum(-1) + ((pr @ ata) * pr).sum(-1)  # |z'|^2 (K, n)
            loss = self.loss.per_sample_cos(dot.div_(_safe_norm(sq)[..., None]), self.y[sl])
            torch.sub(loss, self.loss0[sl], out=out[:, sl])
        return out


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """max(sqrt(sq), 1e-12): the denominator F.normalize uses, from squared norms."""
    return sq.clamp_min(1e-24).sqrt()


def empirical_influence(
    problem: AttributionProblem, batch: ConfusionBatch, cfg: EifConfig | None = None, progress: bool = False
) -> EifResult:
    """EIF scores of all N training samples for all K confusions of ``batch`` (see module doc).

    ``problem``: train features (N, D) and labels (N,), head weight (E, D) and bias (E,), test features
    (N_test, D). Memory: O(N D + k_chunk N r + COS_SLICE); without a cosine form
    O(N D + k_chunk N r + GENERIC_K N E).
    """
    cfg = EifConfig() if cfg is None else cfg
    require(cfg.num_thetas >= 1, f"eif.num_thetas must be >= 1, got {cfg.num_thetas}")
    require(cfg.max_steps >= 1 and cfg.lr > 0, "eif.max_steps must be >= 1 and eif.lr > 0")
    task, train_features, train_labels = problem.task, problem.train_features, problem.train_labels
    weight, bias, test_features = problem.weight, problem.bias, problem.test_features
    gen = torch.Generator().manual_seed(int(cfg.seed))
    z_train = head(train_features, weight, bias)
    cos = None if task.cos_loss is None else _CosPieces.build(task.cos_loss, z_train, train_labels)
    loss0 = task.train_loss(z_train, train_labels) if cos is None else cos.loss0
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("scores", "d0", "d_theta", "theta_norm", "steps")}
    chunks = range(0, len(batch), max(1, int(cfg.k_chunk)))
    for start in tqdm(chunks, desc="EIF", disable=not progress, leave=False):
        sub = batch.select(slice(start, start + int(cfg.k_chunk)))
        fp = sub.features(test_features)  # (k, R, D)
        z0 = head(fp, weight, bias)
        gram = fp @ fp.transpose(1, 2)
        d0 = confusion_distance(task, z0, sub)
        dirs, steps = _thetas(task, z0, gram, sub, cfg, gen)
        proj = (fp.reshape(-1, fp.shape[-1]) @ train_features.T).view(*fp.shape[:2], -1).transpose(1, 2)
        score = z0.new_zeros(len(sub), len(train_features))
        d_theta: list[torch.Tensor] = []
        norms: list[torch.Tensor] = []
        for a in dirs:
            d = confusion_distance(task, z0 + gram @ a.transpose(1, 2), sub)
            norm = _inner(a, gram, a).clamp_min(0).sqrt()
            if cos is not None:
                dloss = cos.dloss(proj, a)
            else:  # moved embeddings z + proj a^T, GENERIC_K confusions at a time
                parts = range(0, len(a), GENERIC_K)
                moved = (z_train + proj[s : s + GENERIC_K] @ a[s : s + GENERIC_K].mT for s in parts)
                dloss = torch.cat([task.train_loss(zm, train_labels) - loss0 for zm in moved])
            factor = sub.sign * (d - d0)
            if cfg.normalize:
                factor = torch.where(norm > 0, factor / norm.clamp_min(1e-30), 0)
            score += dloss * factor[:, None]
            d_theta.append(d)
            norms.append(norm)
        out["scores"].append(score / len(dirs))
        out["d0"].append(d0)
        out["d_theta"].append(torch.stack(d_theta, 1))
        out["theta_norm"].append(torch.stack(norms, 1))
        out["steps"].append(steps)
    cat = {k: torch.cat(v) for k, v in out.items()}
    return EifResult(
        scores=cat["scores"],
        d0=cat["d0"],
        d_theta=cat["d_theta"],
        delta_d=cat["d_theta"] - cat["d0"][:, None],
        theta_norm=cat["theta_norm"],
        steps=cat["steps"],
    )
