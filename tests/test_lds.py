"""The attribution benchmark: LDS against a brute-force loop (one plain re-training per subset), its
pieces against scipy and per-head loops, and the stage end to end on Fashion-MNIST."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from test_influence_eif import DT, make_problem

from eif import lds
from eif.methods.base import AttributionProblem
from eif.methods.grad_dot import GradDot
from eif.retrain.adam import AdamConfig
from eif.retrain.distance import confusion_distance, confusion_distances
from eif.retrain.features import batches_from_indices, epoch_batches
from eif.retrain.head import retrain_heads
from eif.retrain.protocols import PROTOCOLS, Context, Recipes
from eif.retrain.scratch import HeadRecipe, train_heads


def test_spearman_rows_and_noise_ceiling_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 30)), rng.normal(size=(6, 30))
    b[2] = a[2] * 3 + 1  # a monotone relation: 1
    ref = np.mean([stats.spearmanr(a[i], b[i]).statistic for i in range(6)])
    assert lds.lds(a, b) == pytest.approx(ref, rel=1e-12)
    assert lds.noise_ceiling(1.0, 2) == pytest.approx(1.0) and lds.noise_ceiling(-0.1, 2) == 0.0
    assert lds.noise_ceiling(0.84, 1) == pytest.approx(0.84**0.5)


def test_noise_ceiling_is_what_the_true_d_reaches():
    """Parallel noisy measurements of a true d: the truth's LDS against their mean is the ceiling."""
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(200, 400))
    a, b = (truth + rng.normal(scale=0.7, size=truth.shape) for _ in range(2))
    r = lds.lds(a, b)
    assert lds.lds(truth, (a + b) / 2) == pytest.approx(lds.noise_ceiling(r, 2), abs=0.01)
    assert lds.lds(truth, a) == pytest.approx(lds.noise_ceiling(r, 1), abs=0.01)
    lo, hi = lds.bootstrap_interval(a, b, 200, seed=1)
    assert lo <= lds.lds(a, b) <= hi


def test_subsets_and_removal_weights():
    m = lds.subsets(40, 7, 0.25, seed=3)
    assert m.shape == (7, 40) and (m.sum(1) == 10).all()
    assert not (m[0] == m[1]).all() and np.array_equal(m, lds.subsets(40, 7, 0.25, seed=3))
    scores = np.array([[0.5, -1.0, 3.0, 2.0], [1.0, 0.0, 0.0, -2.0]])
    np.testing.assert_array_equal(lds.removal_weights(scores, 2), [[1, 1, 0, 0], [0, 0, 1, 1]])
    # ties go to the lower index
    rand = lds.removal_weights(scores, 2, seed=0)
    assert (rand.sum(1) == 2).all()


def test_many_heads_distances_and_snapshots_equal_loops():
    pb = make_problem(seed=1, n=48, d=6, e=4, c=3)
    ws = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(0), dtype=DT)
    pairs = [torch.tensor([[0, 1]]), torch.tensor([[2, 3], [4, 3]]), torch.tensor([[5, 6]])]
    batched = confusion_distances(ws, pb["b"], pb["fte"], pairs)
    for h in range(5):
        for k, p in enumerate(pairs):
            assert float(batched[h, k]) == pytest.approx(
                float(confusion_distance(ws[h], pb["b"], pb["fte"], p))
            )
    # snapshots after 2 and 5 steps are the weights of runs that stop there
    labels = pb["ytr"].numpy()
    epoch = batches_from_indices(epoch_batches(labels, _batch(), 0, 2), pb["ftr"].float().numpy(), labels)
    loss = pb["task"].cos_loss.float()
    weights = torch.rand(3, 48, generator=torch.Generator().manual_seed(2))
    cfg = AdamConfig(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    w0, b = pb["w"].float(), pb["b"].float()
    snaps = retrain_heads(w0, b, weights, epoch, loss.per_sample, cfg, 10.0, snapshots=[2, 5])
    for i, steps in enumerate((2, 5)):
        short = type(epoch)(
            epoch.features, epoch.labels, epoch.indices, epoch.aug_seeds, epoch.batch_ptr[: steps + 1]
        )
        torch.testing.assert_close(snaps[i], retrain_heads(w0, b, weights, short, loss.per_sample, cfg, 10.0))


def _batch():
    from eif.data.config import BatchConfig

    return BatchConfig(classes_per_batch=3, samples_per_class=4)


def test_lds_equals_a_brute_force_loop():
    """For every subset, a plain torch.optim.Adam re-training of one head on the subset's samples
    (weight 0 outside it), d measured by a per-confusion loop, Spearman by scipy: the same LDS."""
    pb = make_problem(seed=2, n=60, d=6, e=4, c=3)
    pairs_np = [np.array([[0, 1]]), np.array([[2, 3]]), np.array([[4, 5], [6, 5]])]
    from eif.influence import build_batch

    p = AttributionProblem(pb["task"], pb["ftr"], pb["ytr"], pb["w"], pb["b"], pb["fte"])
    scores = GradDot().score(p, build_batch(pairs_np, dtype=DT)).scores.numpy()
    member = lds.subsets(60, 12, 0.5, seed=4)
    labels = pb["ytr"].numpy()
    epoch = batches_from_indices(epoch_batches(labels, _batch(), 7, 2), pb["ftr"].numpy(), labels)
    loss = pb["task"].cos_loss.float()  # re-training runs in float32
    w0, b, fte = pb["w"].float(), pb["b"].float(), pb["fte"].float()
    cfg = AdamConfig(lr=5e-2, betas=(0.9, 0.999), eps=1e-8)
    ws = retrain_heads(w0, b, torch.as_tensor(member, dtype=torch.float32), epoch, loss.per_sample, cfg, None)
    pairs = [torch.as_tensor(q) for q in pairs_np]
    measured = confusion_distances(ws, b, fte, pairs).T.numpy()
    fast = lds.lds(lds.predictions(scores, member), measured)

    brute = np.empty((3, 12))
    for j in range(12):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=5e-2)
        for t in range(epoch.num_batches):
            sl = slice(int(epoch.batch_ptr[t]), int(epoch.batch_ptr[t + 1]))
            f = torch.as_tensor(epoch.features[sl], dtype=torch.float32)
            i = torch.as_tensor(epoch.indices[sl])
            y = torch.as_tensor(epoch.labels[sl])
            keep = torch.as_tensor(member[j, i.numpy()], dtype=torch.float32)
            loss_value = (keep * loss.per_sample(f @ w.T + b, y)).mean()
            opt.zero_grad()
            loss_value.backward()
            opt.step()
        for k, q in enumerate(pairs):
            brute[k, j] = float(confusion_distance(w.detach(), b, fte, q))
    predicted = -(scores @ member.T)
    ref = np.mean([stats.spearmanr(predicted[k], brute[k]).statistic for k in range(3)])
    np.testing.assert_allclose(measured, brute, rtol=1e-4, atol=1e-6)
    assert fast == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize(
    ("loss_cfg", "weight_decay", "clip"),
    [
        (
            {"_target_": "eif.losses.proxynca_pp.ProxyNCAPPConfig", "name": "proxynca_pp", "scale": 3.0},
            0.0,
            0.5,
        ),
        (
            {
                "_target_": "eif.losses.softtriple.SoftTripleConfig",
                "la": 20.0,
                "gamma": 0.1,
                "centers_per_class": 2,
            },
            1e-3,
            None,
        ),
    ],
)
def test_scratch_retraining_equals_a_brute_force_loop(loss_cfg, weight_decay, clip):
    """The from-scratch protocol: for every subset, a fresh nn.Linear head and the loss's proxies trained
    one subset at a time with torch.optim.Adam over the train stage's parameter groups (lr_head,
    lr_proxies, eps, weight decay), gradients clipped as the trainer does: the same heads."""
    from eif.losses import build_loss

    n, d, e, c = 36, 6, 4, 3
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(n, d, generator=g).numpy()
    labels = (np.arange(n) % c).astype(np.int64)
    member = lds.subsets(n, 5, 0.5, seed=1)
    weights = torch.as_tensor(member, dtype=torch.float32)
    recipe = HeadRecipe(
        epochs=3,
        lr_head=2e-2,
        lr_proxies=5e-1,
        eps=1e-3,
        weight_decay=weight_decay,
        clip_grad_value=clip,
        max_batches_per_epoch=2,
    )
    batches = epoch_batches(labels, _batch(), 5, recipe.epochs, recipe.max_batches_per_epoch)
    assert (
        len(batches) == 6
        and batches[2] == epoch_batches(labels, _batch(), 5, 2)[len(epoch_batches(labels, _batch(), 5, 1))]
    )
    epoch = batches_from_indices(batches, feats, labels)
    torch.manual_seed(0)
    head0, loss0 = torch.nn.Linear(d, e), build_loss(loss_cfg, c, e)
    proxies0 = loss0.proxies.detach().clone()
    w, b = train_heads(
        head0.weight.detach(), head0.bias.detach(), loss0, weights, epoch, recipe, heads_per_chunk=2
    )
    assert w.shape == (5, e, d) and b.shape == (5, e)
    for j in range(5):
        head, loss = copy.deepcopy(head0), copy.deepcopy(loss0)
        opt = torch.optim.Adam(
            [
                {"params": list(head.parameters()), "lr": recipe.lr_head},
                {"params": list(loss.parameters()), "lr": recipe.lr_proxies},
            ],
            eps=recipe.eps,
            weight_decay=recipe.weight_decay,
        )
        for t in range(epoch.num_batches):
            sl = slice(int(epoch.batch_ptr[t]), int(epoch.batch_ptr[t + 1]))
            f = torch.as_tensor(epoch.features[sl])
            y = torch.as_tensor(epoch.labels[sl])
            keep = weights[j, torch.as_tensor(epoch.indices[sl])]
            opt.zero_grad()
            loss(head(f), y, keep).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_value_([*head.parameters(), *loss.parameters()], clip)
            opt.step()
        torch.testing.assert_close(w[j], head.weight.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b[j], head.bias.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(w[0], w[1])  # different subsets, different heads
    assert torch.equal(loss0.proxies, proxies0)  # the input loss is left as it was


def test_protocols_are_a_registry_and_scratch_reports_the_train_epochs():
    pb = make_problem(seed=2, n=24, d=6, e=4, c=3)
    from eif.losses import build_loss

    cfg = {"_target_": "eif.losses.proxynca_pp.ProxyNCAPPConfig", "name": "proxynca_pp", "scale": 3.0}
    loss = build_loss(cfg, 3, 4)
    recipes = Recipes(
        horizons=(1, 2),
        optimizer=AdamConfig(lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
        clip_grad_value=10.0,
        head=HeadRecipe(
            epochs=2,
            lr_head=1e-2,
            lr_proxies=1.0,
            eps=1e-3,
            weight_decay=0.0,
            clip_grad_value=10.0,
            max_batches_per_epoch=None,
        ),
    )
    ctx = Context(
        w0=pb["w"].float(),
        bias=pb["b"].float(),
        loss=loss.requires_grad_(False),
        fresh_loss=lambda: build_loss(cfg, 3, 4),
        features=pb["ftr"].float().numpy(),
        labels=pb["ytr"].numpy(),
        batch=_batch(),
        device=torch.device("cpu"),
        heads_per_chunk=None,
        progress=False,
    )
    weights = torch.as_tensor(lds.subsets(24, 3, 0.5, seed=0), dtype=torch.float32)
    assert set(PROTOCOLS) == {"warm_start", "scratch"}
    warm = PROTOCOLS["warm_start"](recipes).retrain(ctx, weights, 0, "")
    assert [h for h, _, _ in warm] == [1, 2] and warm[0][1].shape == (3, 4, 6)
    a = PROTOCOLS["scratch"](recipes).retrain(ctx, weights, 0, "")
    again = PROTOCOLS["scratch"](recipes).retrain(ctx, weights, 0, "")
    other = PROTOCOLS["scratch"](recipes).retrain(ctx, weights, 1, "")
    assert [h for h, _, _ in a] == [2] and a[0][2].shape == (3, 4)
    assert torch.equal(a[0][1], again[0][1]) and not torch.equal(a[0][1], other[0][1])
    # from scratch the head is nowhere near W0; warm-started after 2 epochs at lr 1e-2 it still is
    assert (a[0][1] - ctx.w0).norm() > 3 * (warm[1][1] - ctx.w0).norm()


@pytest.mark.slow
def test_lds_stage_on_fashion_mnist(tmp_path: Path, fmnist_available) -> None:
    from conftest import compose_cfg

    from eif.pipeline import run_job

    cfg = compose_cfg(
        tmp_path,
        [
            "stages=[lds]",
            "methods=[eif,grad_dot,random]",
            "mine.num_pairs=15",
            "lds.subsets=20",
            "lds.horizons=[1,3]",
            "lds.removal_k=[5,20]",
            "lds.bootstrap=100",
            "lds.protocols=[warm_start,scratch]",
        ],
    )
    record = run_job(cfg)
    out = Path(record["artifacts"]["lds"])
    info = json.loads((out / "lds.json").read_text())
    rows = {(r["kind"], r["method"], r["horizon"]): r for r in info["rows"] if r["protocol"] == "warm_start"}
    epochs = int(cfg.train.epochs)
    scratch = {(r["kind"], r["method"]): r for r in info["rows"] if r["protocol"] == "scratch"}
    assert {r["horizon"] for r in scratch.values()} == {epochs} and len(scratch) == len(rows) // 2
    assert {(c["protocol"], c["horizon"]) for c in info["ceilings"]} == {
        ("warm_start", 1),
        ("warm_start", 3),
        ("scratch", epochs),
    }
    assert np.load(out / "measured.npz")["pair_scratch"].shape == (2, 1, 15, 20)
    text = (out / "lds.md").read_text()
    assert "| method | warm-start, 1 epoch | warm-start, 3 epochs | from scratch, " in text
    assert set(info["methods"]) == {"eif", "grad_dot", "random"}
    for r in rows.values():
        assert -1 <= r["low"] <= r["lds"] <= r["high"] <= 1 and len(r["per_seed"]) == 2
    # informative scores predict re-training better than random ones
    assert rows[("pair", "grad_dot", 1)]["lds"] > rows[("pair", "random", 1)]["lds"] + 0.2
    assert {(c["kind"], c["horizon"]) for c in info["ceilings"]} >= {("pair", 1), ("pair", 3)}
    removal = [r for r in info["removal"] if r["removed"] == "grad_dot" and r["kind"] == "pair"]
    assert len(removal) == 2 and all("vs_random" in r for r in removal)
    measured = np.load(out / "measured.npz")["pair"]
    assert measured.shape == (2, 2, 15, 20)
    assert "noise ceiling" in (out / "lds.md").read_text()
