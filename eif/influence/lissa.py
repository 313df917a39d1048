# pyright: strict
"""LiSSA (the reference's IF solver): one pass of the recursion h_t = v + (1 - damping) h_{t-1} -
H_t h_{t-1} / scale over the training set at batch 1 in index order, h_0 = v, X = h_N / scale. Its
fixed point is (H + scale * damping I)^-1 v; one pass rarely reaches it.

Run in blocks of B samples: the reads h f_j need h at the block start (one GEMM) plus the rank-1 updates
made earlier in the block (a B x B feature Gram); each step applies the explicit H_z,j (the factors B S
B^T - sigma I from :class:`~eif.influence.hessian.HeadHessian`, one block of samples at a time, or dense
H_z,j computed for many samples in one batched call) to the K rows; the block's updates are applied with
one GEMM. The decay and the +v terms are kept as two scalars (h = beta * H~ + gamma * v). This is the
sequential recursion, reassociated. ``step_threads`` (an explicit caller choice) runs the steps on fewer
torch threads than the GEMMs, restored afterwards: a step's ~5 small products gain little from a second
thread, and each would wait at an OpenMP barrier for it.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from eif.influence.curvature import curvature_factors, curvature_z
from eif.influence.hessian import HeadHessian
from eif.influence.torch_typed import floats


def lissa(
    hess: HeadHessian,
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
    """The reference LiSSA pass (module doc) over the training samples of ``hess`` (features (N, D),
    z (N, E), labels (N,)) for K right-hand sides v_k = G_k^T F_p,k, ``v_factors`` = (G (K, R, E),
    F_p (K, R, D)).
    Returns h_N / scale (K, E, D). Per block of B = ``block_size`` samples: one GEMM reads h f_j; each
    step applies H_z,j to the K rows r_j (``factored``, default: a loss with a cosine form and
    M + 2 < E / 2: as three
    thin products with its factors B S B^T - sigma I, else one (K, E) x (E, E) product with the dense
    H_z,j), after the in-block correction (one GEMM per ``sub_block`` steps for the earlier sub-blocks,
    one gemv for the current one); curvatures come ``curvature_chunk`` samples per batched call; all
    into preallocated buffers; one GEMM applies the block's updates.
    Memory: K E D + B K E + curvature_chunk E max(E, M).
    """
    task, features, z, y = hess.task, hess.features, hess.z, hess.y
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
    # the buffers of one form only: low rank B_j = [P^^T | u_j | q_j] (and B^T r_j, S B^T r_j), else
    # the dense H_z,j
    basis = y_buf = ys_buf = hz = core = None
    sigma: list[float] = []
    if lowrank and targets is not None:
        basis = z.new_empty(hchunk, e, m + 2)
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
                    if basis is not None and loss is not None:
                        if hess.factored:  # the operator's: kept, or its current block (the same values)
                            uq, core, sig = hess.factors_of(start + j, len(zc))
                        else:
                            uq, core, sig = curvature_factors(loss, zc, yc)
                        basis[: len(zc), :, m:] = uq
                        sigma = floats(sig)
                    elif hz is not None:
                        curvature_z(task, zc, yc, out=hz[: len(zc)])
                if j == j0 and j:  # the earlier sub-blocks' updates, for the whole sub-block at once (a GEMM)
                    _set_threads(threads)
                    rf[j : j + sub].addmm_(corr[j : j + sub, :j], uf[:j], alpha=-1.0)
                    _set_threads(steps)
                if j > j0:
                    rf[j].addmv_(uf[j0:j].T, corr[j, j0:j], alpha=-1.0)
                if basis is not None and core is not None and y_buf is not None and ys_buf is not None:
                    # u_j = B S B^T r_j - sigma r_j, row-wise
                    torch.mm(r[j], basis[jh], out=y_buf)
                    torch.mm(y_buf, core[jh].mT, out=ys_buf)
                    torch.addmm(r[j], ys_buf, basis[jh].mT, beta=-sigma[jh], out=u[j])
                elif hz is not None:
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
