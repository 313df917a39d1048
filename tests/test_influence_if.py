"""IF on cached features: solvers against dense per-sample autograd, LiSSA blocks against the plain loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from test_influence_eif import CONFUSIONS, DT, make_problem, sign_case

from eif.influence import AttributionProblem, IfConfig, build_batch, classic_influence
from eif.influence.curvature import loss_grad_z
from eif.influence.hessian import HeadHessian
from eif.influence.lissa import lissa
from eif.influence.solvers import ConjugateGradients, Exact, Lissa, exact_hessian
from eif.influence.task import head
from eif.utils.errors import EifError

SIGNS = [1.0, 1.0, 1.0, -1.0]


def dense_parts(pb, pairs, signs):
    """Per-sample grads (N, E*D), mean-loss Hessian (E*D, E*D), objective grads (K, E*D): plain autograd."""
    task, ftr, ytr, w, b, fte = (pb[k] for k in ("task", "ftr", "ytr", "w", "b", "fte"))
    shape = w.shape

    def loss_i(wflat, i):
        return task.train_loss(head(ftr[i : i + 1], wflat.view(shape), b), ytr[i : i + 1])[0]

    grads = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda x, i=i: loss_i(x, i), w.flatten())
            for i in range(len(ftr))
        ]
    )
    hess = torch.autograd.functional.hessian(
        lambda x: torch.stack([loss_i(x, i) for i in range(len(ftr))]).mean(), w.flatten()
    )
    vs = []
    for p, s in zip(pairs, signs):

        def obj(wflat, p=p, s=s):
            wt = wflat.view(shape)
            ds = [task.measurement(head(fte[a], wt, b), head(fte[c], wt, b)) for a, c in p]
            return s * torch.stack(ds).mean()

        vs.append(torch.autograd.functional.jacobian(obj, w.flatten()))
    return grads, hess, torch.stack(vs), loss_i


def run(pb, cfg, pairs=CONFUSIONS, signs=SIGNS):
    return classic_influence(as_problem(pb), build_batch(pairs, signs, dtype=torch.float64), cfg)


def as_problem(pb):
    return AttributionProblem(pb["task"], pb["ftr"], pb["ytr"], pb["w"], pb["b"], pb["fte"])


def operator(task, pb, z, y=None):
    return HeadHessian(task, pb["ftr"], z, pb["ytr"] if y is None else y)


def test_exact_and_cg_match_dense_autograd():
    pb = make_problem()
    damping = 2.0  # H is indefinite here (smallest eigenvalue -1.3): CG needs H + damping I > 0
    grads, hess, v, _ = dense_parts(pb, CONFUSIONS, SIGNS)
    x = torch.linalg.solve(hess + damping * torch.eye(len(hess), dtype=DT), v.T).T
    ref = x @ grads.T  # (K, N): positive = harmful
    exact = run(pb, IfConfig(solver=Exact(damping=damping), k_chunk=3))
    torch.testing.assert_close(exact.scores, ref, rtol=1e-8, atol=1e-10)
    cg = run(pb, IfConfig(solver=ConjugateGradients(damping=damping, tol=1e-10), score_chunk=7))
    rel = (cg.scores - exact.scores).norm() / exact.scores.norm()
    assert rel < 1e-4 and (cg.iterations > 1).all()


def test_cg_reports_negative_curvature():
    with pytest.raises(EifError, match="negative curvature"):
        run(make_problem(), IfConfig(solver=ConjugateGradients(damping=0.01)))


def test_exact_hessian_is_the_autograd_hessian():
    pb = make_problem(seed=3)
    _, hess, _, _ = dense_parts(pb, CONFUSIONS[:1], [1.0])
    z = head(pb["ftr"], pb["w"], pb["b"])
    torch.testing.assert_close(exact_hessian(operator(pb["task"], pb, z)), hess)


def plain_lissa(pb, v, scale, damping):
    """The reference recursion, one training sample at a time, HVPs by double backprop on dense W."""
    _, _, _, loss_i = dense_parts(pb, CONFUSIONS[:1], [1.0])
    w = pb["w"].flatten()
    out = []
    for vk in v:
        h = vk.clone()
        for i in range(len(pb["ftr"])):
            wr = w.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(loss_i(wr, i), wr, create_graph=True)
            (hv,) = torch.autograd.grad(g @ h, wr)
            h = vk + (1 - damping) * h - hv / scale
        out.append(h / scale)
    return torch.stack(out)


@pytest.mark.parametrize(
    "block_size,sub_block,curvature_chunk", [(1, 16, 64), (4, 16, 64), (7, 3, 2), (64, 16, 64), (64, 4, 5)]
)
@pytest.mark.parametrize("factored", [False, True])
def test_lissa_blocks_equal_plain_loop(block_size, sub_block, curvature_chunk, factored):
    pb = make_problem(seed=4)
    scale, damping = 5.0, 0.05  # a small scale so the curvature terms matter within 30 steps
    grads, _, v, _ = dense_parts(pb, CONFUSIONS, SIGNS)
    ref = plain_lissa(pb, v, scale, damping)
    batch = build_batch(CONFUSIONS, SIGNS, dtype=torch.float64)
    fp = batch.features(pb["fte"])
    from eif.influence.confusion import distance_and_grad

    _, g = distance_and_grad(pb["task"], head(fp, pb["w"], pb["b"]), batch)
    z = head(pb["ftr"], pb["w"], pb["b"])
    v_factors = (g * batch.sign[:, None, None], fp)
    fast = lissa(
        operator(pb["task"], pb, z),
        v_factors,
        scale,
        damping,
        block_size,
        sub_block=sub_block,
        curvature_chunk=curvature_chunk,
        factored=factored,
    )
    torch.testing.assert_close(fast.flatten(1), ref, rtol=1e-9, atol=1e-12)
    res = run(pb, IfConfig(solver=Lissa(scale=scale, damping=damping, block_size=block_size), k_chunk=2))
    torch.testing.assert_close(res.scores, ref @ grads.T, rtol=1e-9, atol=1e-12)


def test_lissa_float32_matches_float64():
    pb = make_problem(seed=5, n=200)
    r64 = run(pb, IfConfig(solver=Lissa(block_size=32)))
    from eif.influence import ConfusionTask
    from eif.losses import ProxyNCAPP

    loss32 = ProxyNCAPP(3, 4).float()
    with torch.no_grad():
        loss32.proxies.copy_(pb["task"].train_loss.__self__.proxies.float())
    pb32 = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in pb.items()}
    pb32["task"] = ConfusionTask.from_loss(loss32)
    r32 = classic_influence(
        as_problem(pb32),
        build_batch(CONFUSIONS, SIGNS, dtype=torch.float32),
        IfConfig(solver=Lissa(block_size=32)),
    )
    atol = 1e-5 * float(r64.scores.abs().max())
    torch.testing.assert_close(r32.scores.double(), r64.scores, rtol=1e-3, atol=atol)


def test_lissa_converges_to_scaled_damping_solution():
    """LiSSA's fixed point is (H + scale*damping I)^-1 v: after enough steps it matches exact there."""
    pb = make_problem(seed=0, n=30)
    rep = {k: (pb[k].repeat(40, 1) if k == "ftr" else pb[k].repeat(40)) for k in ("ftr", "ytr")}
    long = {**pb, **rep}  # 40 passes over the same data = the same mean Hessian, 1200 steps
    # scale * damping = 2 exceeds |smallest eigenvalue of H| (about 1.3), so the recursion contracts;
    # a large scale averages the per-sample Hessians over many steps.
    cfg = IfConfig(solver=Lissa(scale=100.0, damping=0.02, block_size=200))
    lis = run(long, cfg)
    ex = run(long, IfConfig(solver=Exact(damping=cfg.solver.scale * cfg.solver.damping)))
    corr = np.corrcoef(lis.scores.flatten().numpy(), ex.scores.flatten().numpy())[0, 1]
    assert corr > 0.99


def test_if_sign_on_hand_made_case():
    task, ftr, ytr, w, b, fte = sign_case()
    pb = dict(task=task, ftr=ftr, ytr=ytr, w=w, b=b, fte=fte)
    for solver in (Exact(damping=0.01), ConjugateGradients(damping=0.01), Lissa()):
        res = run(pb, IfConfig(solver=solver), [np.array([[0, 1]])], [1.0])
        assert res.scores[0, 0] > 0 > res.scores[0, 1], solver  # x1 harmful, x2 helpful


def test_exact_refuses_large_heads():
    pb = make_problem()
    pb["w"], pb["b"] = torch.zeros(64, 200, dtype=DT), torch.zeros(64, dtype=DT)
    pb["ftr"], pb["fte"] = torch.zeros(30, 200, dtype=DT), torch.zeros(12, 200, dtype=DT)
    with pytest.raises(EifError, match="exact IF solver"):
        run(pb, IfConfig(solver=Exact(damping=5.0)))


def test_loss_grad_z_is_per_sample():
    pb = make_problem()
    z = head(pb["ftr"], pb["w"], pb["b"])
    gz = loss_grad_z(pb["task"], z, pb["ytr"])
    for i in (0, 7):
        zi = z[i : i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(pb["task"].train_loss(zi, pb["ytr"][i : i + 1]).sum(), zi)
        torch.testing.assert_close(gz[i], gi[0])


def _max_curvature(pb, iters: int = 30) -> float:
    from eif.influence.hessian import HeadHessian

    z = head(pb["ftr"], pb["w"], pb["b"])
    return float(HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"]).sample_curvature(iters).max())


def test_max_curvature_matches_dense_eigenvalues():
    pb = make_problem(seed=7, n=10)
    _, _, _, loss_i = dense_parts(pb, CONFUSIONS[:1], [1.0])
    dense = max(
        float(
            torch.linalg.eigvalsh(
                torch.autograd.functional.hessian(lambda x, i=i: loss_i(x, i), pb["w"].flatten())
            )
            .abs()
            .max()
        )
        for i in range(10)
    )
    assert abs(_max_curvature(pb, iters=200) - dense) < 1e-3 * dense


def test_lissa_restores_thread_count():
    """The steps run on one thread; torch's thread count is back afterwards, also after an error."""
    pb = make_problem(seed=4)
    batch = build_batch(CONFUSIONS, SIGNS, dtype=torch.float64)
    fp = batch.features(pb["fte"])
    from eif.influence.confusion import distance_and_grad

    _, g = distance_and_grad(pb["task"], head(fp, pb["w"], pb["b"]), batch)
    z = head(pb["ftr"], pb["w"], pb["b"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lissa(operator(pb["task"], pb, z), (g, fp), 5.0, 0.05, 8)
        assert torch.get_num_threads() == 2
        bad = torch.full_like(pb["ytr"], 10**6)  # a label out of range fails inside the step loop
        with pytest.raises((IndexError, RuntimeError)):
            lissa(
                HeadHessian(pb["task"], pb["ftr"], z, bad, cache_floats=0),
                (g, fp),
                5.0,
                0.05,
                8,
                factored=False,
            )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_lissa_divergence_is_one_readable_error():
    pb = make_problem(seed=8, n=200)  # per-step growth ~ |H_i| / scale = 1e3: overflows in 200 steps
    with pytest.raises(EifError, match="LiSSA diverged"):
        run(pb, IfConfig(solver=Lissa(scale=1e-3, damping=0.0)))


def _cos_loss(name: str) -> torch.nn.Module:
    from eif.losses import ProxyNCAPP, SoftTriple
    from eif.losses.pml import ArcFaceLoss, CosFaceLoss, NormalizedSoftmaxLoss, ProxyNCALoss

    return {
        "proxynca_pp": lambda: ProxyNCAPP(3, 5),
        "softtriple": lambda: SoftTriple(3, 5, centers_per_class=3),
        "proxynca": lambda: ProxyNCALoss(3, 5, softmax_scale=2.0),
        "normalized_softmax": lambda: NormalizedSoftmaxLoss(3, 5, temperature=0.5),
        "cosface": lambda: CosFaceLoss(3, 5, margin=0.35, scale=4.0),
        "arcface": lambda: ArcFaceLoss(3, 5, margin=20.0, scale=4.0),
    }[name]().double()


@pytest.mark.parametrize(
    "loss_name", ["proxynca_pp", "softtriple", "proxynca", "normalized_softmax", "cosface", "arcface"]
)
def test_curvature_closed_form_matches_autograd_hessian(loss_name):
    """H_z,i through the cosines (closed form) equals torch.func.hessian of each per-sample loss, and so
    does the term-by-term product (the softmax closed form where the loss declares one, else autograd in
    the cosines)."""
    from eif.influence import ConfusionTask
    from eif.influence.curvature import curvature_apply, curvature_z

    g = torch.Generator().manual_seed(11)
    loss = _cos_loss(loss_name)
    assert (loss.cos_logit_scale() is None) == (loss_name in ("softtriple", "arcface"))
    with torch.no_grad():
        for param in loss.parameters():
            param.copy_(torch.randn(*param.shape, generator=g, dtype=DT))
    fast = ConfusionTask.from_loss(loss)
    generic = ConfusionTask(train_loss=loss.per_sample)
    assert fast.cos_loss is not None and generic.cos_loss is None
    z, y = 2 * torch.randn(9, 5, generator=g, dtype=DT), torch.randint(0, 3, (9,), generator=g)
    per = lambda q, i: loss.per_sample(q[None], y[i : i + 1])[0]  # noqa: E731
    ref = torch.stack([torch.autograd.functional.hessian(lambda q, i=i: per(q, i), z[i]) for i in range(9)])
    torch.testing.assert_close(curvature_z(fast, z, y), ref, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(curvature_z(generic, z, y), ref, rtol=1e-9, atol=1e-11)
    assert ref.abs().max() > 0.1
    # applied term by term (no M x M matrix; the form for many proxies), to K=4 tangents at once
    t = torch.randn(9, 4, 5, generator=g, dtype=DT)
    torch.testing.assert_close(curvature_apply(loss, z, y, t), t @ ref.mT, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("loss_name", ["proxynca_pp", "proxynca", "normalized_softmax", "cosface"])
def test_softmax_curvature_matches_autograd_hessian(loss_name):
    """The softmax closed form's products, compressed curvatures Psi^T H_z Psi and weighted sums
    sum_i w_i H_z,i equal those of torch.func.hessian of each per-sample loss."""
    from eif.influence.softmax_curvature import SoftmaxCurvature

    g = torch.Generator().manual_seed(1)
    loss = _cos_loss(loss_name)
    with torch.no_grad():
        for param in loss.parameters():
            param.copy_(torch.randn(*param.shape, generator=g, dtype=DT))
    z, y = 2 * torch.randn(9, 5, generator=g, dtype=DT), torch.randint(0, 3, (9,), generator=g)
    per = lambda q, i: loss.per_sample(q[None], y[i : i + 1])[0]  # noqa: E731
    ref = torch.stack([torch.autograd.functional.hessian(lambda q, i=i: per(q, i), z[i]) for i in range(9)])
    assert ref.abs().max() > 0.1
    curv = SoftmaxCurvature.build(loss, z, y, chunk=4)  # two chunks
    t = torch.randn(9, 4, 5, generator=g, dtype=DT)
    torch.testing.assert_close(curv.apply(slice(None), t), t @ ref.mT, rtol=1e-10, atol=1e-12)
    idx = torch.tensor([7, 1, 4])
    torch.testing.assert_close(curv.apply(idx, t[idx]), t[idx] @ ref[idx].mT, rtol=1e-10, atol=1e-12)
    psi = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=DT))[0]
    torch.testing.assert_close(
        curv.compressed(slice(2, 8), psi), psi.T @ ref[2:8] @ psi, rtol=1e-10, atol=1e-12
    )
    w = torch.rand(9, generator=g, dtype=DT)
    torch.testing.assert_close(
        curv.weighted_sum(torch.arange(9), w), torch.einsum("i,ief->ef", w, ref), rtol=1e-10, atol=1e-12
    )


def test_head_hessian_without_cached_factors_is_the_same_operator():
    """With no room to cache the curvature factors, HeadHessian applies H_z term by term, from softmax
    statistics kept once (room for N x M floats) or computed per block (no room); the products and the
    per-sample curvature estimates are the cached operator's."""
    from eif.influence.hessian import HeadHessian

    pb = make_problem()
    z = head(pb["ftr"], pb["w"], pb["b"])
    cached = HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"], damping=0.5)
    kept = HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"], damping=0.5, cache_floats=len(z) * 3)
    direct = HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"], damping=0.5, cache_floats=0)
    assert cached.factored and not kept.factored and not direct.factored
    assert kept.softmax is not None and direct.softmax is None
    assert (cached.form, kept.form, direct.form) == ("factors", "softmax", "softmax")
    x = torch.randn(3, *pb["w"].shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    for other in (kept, direct):
        torch.testing.assert_close(other.matvec(x), cached.matvec(x), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(other.sample_curvature(10), cached.sample_curvature(10), rtol=1e-7, atol=0)


def test_lissa_generic_curvature_equals_cosine_form():
    """LiSSA with a task without a cosine form (autograd H_z) gives the same X as the closed form."""
    from eif.influence import ConfusionTask
    from eif.influence.confusion import distance_and_grad

    pb = make_problem(seed=6, n=40)
    batch = build_batch(CONFUSIONS, SIGNS, dtype=torch.float64)
    fp = batch.features(pb["fte"])
    _, g = distance_and_grad(pb["task"], head(fp, pb["w"], pb["b"]), batch)
    z = head(pb["ftr"], pb["w"], pb["b"])
    generic = ConfusionTask(train_loss=pb["task"].train_loss)
    xs = [lissa(operator(t, pb, z), (g, fp), 5.0, 0.05, 16) for t in (pb["task"], generic)]
    torch.testing.assert_close(xs[0], xs[1], rtol=1e-10, atol=1e-12)


def test_lissa_scale_auto():
    """A head whose per-sample curvature is far above 2 * 500 makes the reference scale diverge (one
    error naming if.scale=auto); auto picks 2x the estimated max curvature, is reported, and equals that
    number given explicitly."""
    from eif.influence.solvers import AUTO_SCALE_FACTOR

    pb = make_problem(seed=8, n=200)
    pb["w"] = 0.01 * pb["w"]  # |z| ~ 0.01 |f|: H_z ~ 1/|z|^2 and |f|^2 stays, so |H_i| grows 1e4x
    pb["ftr"], pb["ytr"] = pb["ftr"].repeat(4, 1), pb["ytr"].repeat(4)  # 800 steps: overflows float64
    curv = _max_curvature(pb)
    assert curv > 2 * 500 * 4
    with pytest.raises(EifError, match="if.solver.scale=auto"):
        run(pb, IfConfig(solver=Lissa(damping=0.0)))
    auto = run(pb, IfConfig(solver=Lissa(scale="auto", block_size=32)))
    assert auto.scale == pytest.approx(AUTO_SCALE_FACTOR * curv, rel=1e-12)
    assert torch.isfinite(auto.scores).all() and auto.scores.abs().max() > 0
    fixed = run(pb, IfConfig(solver=Lissa(scale=auto.scale, block_size=32)))
    torch.testing.assert_close(auto.scores, fixed.scores, rtol=0, atol=0)
    assert fixed.scale == auto.scale and np.isnan(run(pb, IfConfig(solver=Exact(damping=5.0))).scale)
    with pytest.raises(ValidationError, match="auto"):
        IfConfig(solver=Lissa(scale="big"))


def test_head_hessian_keeps_the_factors_only_for_full_products():
    """One pass over the samples (per-sample curvatures, curvature rows as LiSSA and its residual use
    them) computes the curvature factors block by block and keeps none; the first product with H keeps
    them all; the values are the same numbers either way (blocks straddling FACTOR_BLOCK included)."""
    from eif.influence import hessian

    pb = make_problem()
    z = head(pb["ftr"], pb["w"], pb["b"])
    n = len(z)
    old = hessian.FACTOR_BLOCK
    hessian.FACTOR_BLOCK = 7  # several blocks on the small problem
    try:
        hop = hessian.HeadHessian(pb["task"], pb["ftr"], z, pb["ytr"])
        curv = hop.sample_curvature(10)
        pieces = [hop.factors_of(s, min(5, n - s)) for s in range(0, n, 5)]  # straddle blocks of 7
        t = torch.randn(n, 2 * hop.e, generator=torch.Generator().manual_seed(3), dtype=DT)
        rows = t.clone()
        hop.curvature_rows(0, rows)
        assert hop.factored and hop.factors is None
        hop.with_damping(1.0).matvec(torch.zeros(1, *pb["w"].shape, dtype=DT))  # a copy keeps them for all
        assert hop.factors is not None
        for i, part in enumerate(zip(*pieces)):
            assert torch.equal(torch.cat(part), hop.factors[i])
        assert torch.equal(hop.sample_curvature(10), curv)
        kept_rows = t.clone()
        hop.curvature_rows(0, kept_rows)
        assert torch.equal(kept_rows, rows)
    finally:
        hessian.FACTOR_BLOCK = old
