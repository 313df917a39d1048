"""EIF on cached features: the batched low-rank path against a plain dense reference, and the sign."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from eif.influence import AttributionProblem, ConfusionTask, EifConfig, build_batch
from eif.influence import empirical_influence as eif_of_problem
from eif.influence.eif import _inner, _thetas
from eif.influence.task import head
from eif.losses import ProxyNCAPP, SoftTriple

DT = torch.float64  # the tests compare in float64 (set per tensor: never change the global default)


def empirical_influence(task, ftr, ytr, w, b, fte, batch, cfg=None):
    """EIF on the problem the tensors make (the tests build problems from tensors)."""
    return eif_of_problem(AttributionProblem(task, ftr, ytr, w, b, fte), batch, cfg)


def make_problem(seed: int = 0, n: int = 30, d: int = 6, e: int = 4, c: int = 3, n_test: int = 12):
    g = torch.Generator().manual_seed(seed)
    loss = ProxyNCAPP(c, e).double()
    with torch.no_grad():
        loss.proxies.copy_(torch.randn(c, e, generator=g, dtype=DT))
    task = ConfusionTask.from_loss(loss)
    return dict(
        task=task,
        ftr=torch.randn(n, d, generator=g, dtype=DT),
        ytr=torch.randint(0, c, (n,), generator=g),
        w=torch.randn(e, d, generator=g, dtype=DT),
        b=0.1 * torch.randn(e, generator=g, dtype=DT),
        fte=torch.randn(n_test, d, generator=g, dtype=DT),
    )


CONFUSIONS = [np.array([[0, 1]]), np.array([[2, 3]]), np.array([[4, 5], [6, 5], [7, 8]]), np.array([[9, 2]])]


def plain_eif(task, ftr, ytr, w, b, fte, pairs, cfg: EifConfig, signs):
    """Dense W', per-sample losses one sample at a time: the definition, with no structure used."""
    scores, dthetas = [], []

    def per_sample(wt):
        return torch.stack(
            [task.train_loss(head(ftr[i : i + 1], wt, b), ytr[i : i + 1])[0] for i in range(len(ftr))]
        )

    loss0 = per_sample(w)
    for p, sign in zip(pairs, signs):

        def dist(wt, p=p):
            ds = [task.measurement(head(fte[a], wt, b), head(fte[bb], wt, b)) for a, bb in p]
            return torch.stack(ds).mean()

        d0 = dist(w)
        score, dts = torch.zeros(len(ftr), dtype=DT), []
        for direction in [1.0, -1.0][: cfg.num_thetas]:
            wt = w.clone()
            for _ in range(cfg.max_steps):
                wt.requires_grad_(True)
                d = dist(wt)
                if abs(float(d.detach() - d0)) >= cfg.stop_delta:
                    break
                (gw,) = torch.autograd.grad(sign * d, wt)
                wt = (wt + direction * cfg.lr * gw).detach()
            wt = wt.detach()
            dd = dist(wt) - d0
            factor = sign * dd / (torch.linalg.norm(wt - w) if cfg.normalize else 1.0)
            score += (per_sample(wt) - loss0) * factor
            dts.append(dist(wt))
        scores.append(score / len(dts))
        dthetas.append(torch.stack(dts))
    return torch.stack(scores).detach(), torch.stack(dthetas).detach()


@pytest.mark.parametrize("num_thetas,normalize,k_chunk", [(1, False, 16), (2, True, 3), (2, False, 1)])
def test_eif_matches_dense_reference(num_thetas, normalize, k_chunk):
    pb = make_problem()
    # A large lr so that several confusions hit the stopping rule at different steps.
    cfg = EifConfig(
        lr=0.003, max_steps=25, stop_delta=0.15, num_thetas=num_thetas, normalize=normalize, k_chunk=k_chunk
    )
    signs = [1.0, 1.0, 1.0, -1.0]
    batch = build_batch(CONFUSIONS, signs, dtype=torch.float64)
    res = empirical_influence(pb["task"], pb["ftr"], pb["ytr"], pb["w"], pb["b"], pb["fte"], batch, cfg)
    ref, ref_d = plain_eif(
        pb["task"], pb["ftr"], pb["ytr"], pb["w"], pb["b"], pb["fte"], CONFUSIONS, cfg, signs
    )
    steps = res.steps[:, 0]
    assert (steps < cfg.max_steps).any() and (steps == cfg.max_steps).any()  # the stop rule was exercised
    torch.testing.assert_close(res.d_theta, ref_d, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(res.scores, ref, rtol=1e-8, atol=1e-10)
    assert res.scores.abs().max() > 1e-3


def test_eif_float32_matches_float64():
    pb = make_problem(seed=1)
    cfg = EifConfig(lr=0.05, max_steps=20)
    b64 = build_batch(CONFUSIONS, dtype=torch.float64)
    r64 = empirical_influence(pb["task"], pb["ftr"], pb["ytr"], pb["w"], pb["b"], pb["fte"], b64, cfg)
    task32 = ConfusionTask.from_loss(ProxyNCAPP(3, 4).float())
    with torch.no_grad():
        task32.train_loss.__self__.proxies.copy_(pb["task"].train_loss.__self__.proxies.float())
    f = {k: v.float() if v.is_floating_point() else v for k, v in pb.items() if k != "task"}
    r32 = empirical_influence(
        task32,
        f["ftr"],
        f["ytr"],
        f["w"],
        f["b"],
        f["fte"],
        build_batch(CONFUSIONS, dtype=torch.float32),
        cfg,
    )
    atol = 1e-6 * float(r64.scores.abs().max())
    torch.testing.assert_close(r32.scores.double(), r64.scores, rtol=2e-3, atol=atol)


def test_extra_thetas_are_orthogonal_and_on_the_sphere():
    pb = make_problem(seed=2)
    batch = build_batch(CONFUSIONS, dtype=torch.float64)
    fp = batch.features(pb["fte"])
    z0 = head(fp, pb["w"], pb["b"])
    gram = fp @ fp.transpose(1, 2)
    dirs, steps = _thetas(
        pb["task"], z0, gram, batch, EifConfig(lr=0.1, num_thetas=5), torch.Generator().manual_seed(0)
    )
    assert len(dirs) == 5 and (steps[:, 2:] == 0).all()
    dense = [torch.einsum("ker,krd->ked", a, fp) for a in dirs]  # W' - W0 as dense (K, E, D)
    radius = dense[0].flatten(1).norm(dim=1)
    for m in range(2, 5):
        torch.testing.assert_close(dense[m].flatten(1).norm(dim=1), radius)
        torch.testing.assert_close(_inner(dirs[m], gram, dirs[m]).sqrt(), radius)
        for j in range(m):
            dot = (dense[m] * dense[j]).flatten(1).sum(1)
            assert (dot.abs() <= 1e-9 * radius**2).all()


def sign_case():
    """W = I, b = 0 (z = f). Test pair a=(1, .2), b=(1, -.2): close, different classes. Repairing it means
    spreading the 2nd coordinate. Training x1=(1, .3) of class 0 (proxy (1, 0)) is fit by shrinking the
    2nd coordinate: it pulls the pair together -> harmful. x2=(.3, 1) of class 1 (proxy (0, 1)) is fit
    by growing it: helpful."""
    loss = ProxyNCAPP(2, 2).double()
    with torch.no_grad():
        loss.proxies.copy_(torch.eye(2, dtype=DT))
    task = ConfusionTask.from_loss(loss)
    ftr = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=DT)
    fte = torch.tensor([[1.0, 0.2], [1.0, -0.2]], dtype=DT)
    return task, ftr, torch.tensor([0, 1]), torch.eye(2, dtype=DT), torch.zeros(2, dtype=DT), fte


def test_eif_sign_on_hand_made_case():
    task, ftr, ytr, w, b, fte = sign_case()
    batch = build_batch([np.array([[0, 1]])], dtype=torch.float64)
    res = empirical_influence(task, ftr, ytr, w, b, fte, batch)
    assert res.delta_d[0, 0] > 0  # theta_max repairs the pair
    assert res.scores[0, 0] > 0 > res.scores[0, 1]  # x1 harmful, x2 helpful


@pytest.mark.parametrize("loss_name", ["proxynca_pp", "softtriple"])
def test_eif_cosine_path_equals_generic_path_and_dense_reference(loss_name, monkeypatch):
    """EIF through per_sample_cos (low-rank cosines, no (K, N, E) tensor) equals the generic path on
    moved embeddings and the dense per-sample definition; float32 agrees to float32 rounding."""
    import eif.influence.eif as eif_mod

    monkeypatch.setattr(eif_mod, "COS_SLICE", 50)  # several slices over the training set
    monkeypatch.setattr(eif_mod, "GENERIC_K", 2)  # several confusion slices on the generic path
    pb = make_problem(seed=3)
    if loss_name == "softtriple":
        loss = SoftTriple(3, 4, centers_per_class=2).double()
        with torch.no_grad():
            loss.proxies.copy_(torch.randn(6, 4, generator=torch.Generator().manual_seed(9), dtype=DT))
        pb["task"] = ConfusionTask.from_loss(loss)
    fast_task = pb["task"]
    loss = fast_task.cos_loss
    assert loss is not None
    generic = ConfusionTask(train_loss=loss.per_sample)  # no cosine form: moved embeddings
    cfg = EifConfig(lr=0.05, max_steps=15, num_thetas=3, k_chunk=3)
    batch = build_batch(CONFUSIONS, [1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
    args = (pb["ftr"], pb["ytr"], pb["w"], pb["b"], pb["fte"], batch, cfg)
    fast = empirical_influence(fast_task, *args)
    slow = empirical_influence(generic, *args)
    assert fast.scores.abs().max() > 1e-3
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-10, atol=1e-12)
    ref, _ = plain_eif(
        fast_task,
        *args[:5],
        CONFUSIONS,
        EifConfig(lr=0.05, max_steps=15, num_thetas=2),
        [1.0, 1.0, 1.0, -1.0],
    )
    fast2 = empirical_influence(fast_task, *args[:-1], EifConfig(lr=0.05, max_steps=15, num_thetas=2))
    torch.testing.assert_close(fast2.scores, ref, rtol=1e-8, atol=1e-10)
    loss32 = copy.deepcopy(loss).float()
    f32 = [x.float() if x.is_floating_point() else x for x in args[:5]]
    b32 = build_batch(CONFUSIONS, [1.0, 1.0, 1.0, -1.0], dtype=torch.float32)
    s32 = [
        empirical_influence(t, *f32, b32, cfg).scores.double()
        for t in (ConfusionTask.from_loss(loss32), ConfusionTask(train_loss=loss32.per_sample))
    ]
    atol = 1e-5 * float(slow.scores.abs().max())
    torch.testing.assert_close(s32[0], s32[1], rtol=1e-4, atol=atol)
    torch.testing.assert_close(s32[0], slow.scores, rtol=2e-3, atol=atol)
