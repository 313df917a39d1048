"""Batched head re-training: Adam, weights, Δd and the shared epoch features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eif.retrain.adam import AdamConfig, AdamState, adam_step
from eif.retrain.distance import confusion_distance, pair_distance
from eif.retrain.features import augmented_epoch, batches_from_indices
from eif.retrain.head import EpochBatches, retrain_heads
from eif.retrain.weights import SCHEMES, magnitude_weights, sample_weights

E, D, C, N = 6, 10, 4, 40

ADAM = AdamConfig(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)  # a large lr, so a few steps move W


def proxy_loss(proxies: torch.Tensor):
    """A ProxyNCA++-style per-sample loss with fixed proxies: (..., B, E), (B,) -> (..., B)."""
    p = 3 * F.normalize(proxies, dim=-1)

    def per_sample(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dist = (3 * F.normalize(z, dim=-1).unsqueeze(-2) - p).pow(2).sum(-1)  # (..., B, C)
        logp = torch.log_softmax(-dist, dim=-1)
        return -logp.gather(-1, y.expand(dist.shape[:-1]).unsqueeze(-1)).squeeze(-1)

    return per_sample


def small_epoch(seed: int = 0, steps: int = 5, bs: int = 8) -> EpochBatches:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(N, D, generator=g).numpy()
    labels = (torch.arange(N) % C).numpy()
    batches = [
        [(int(i), 1000 + t * bs + k) for k, i in enumerate(torch.randperm(N, generator=g)[:bs])]
        for t in range(steps)
    ]
    return batches_from_indices(batches, feats, labels)


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(E, D, generator=g) * 0.3
    bias = torch.randn(E, generator=g) * 0.1
    per_sample = proxy_loss(torch.randn(C, E, generator=g))
    scores = torch.randn(3, N, generator=g)
    return w0, bias, per_sample, sample_weights(scores)


def test_adam_step_matches_torch_optim_adam():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(3, 4, 5, generator=g)
    ref = torch.nn.Parameter(p0.clone())
    opt = torch.optim.Adam([ref], lr=1e-2, eps=1e-8)
    mine, state = p0.clone(), AdamState.zeros_like(p0)
    for _ in range(20):
        grad = torch.randn(3, 4, 5, generator=g)
        ref.grad = grad.clone()
        opt.step()
        adam_step(mine, grad, state, lr=1e-2)
    torch.testing.assert_close(mine, ref.detach(), rtol=1e-6, atol=1e-7)
    assert state.step == 20


def test_batched_retrain_equals_one_at_a_time_and_torch_adam(setup):
    w0, bias, per_sample, weights = setup
    epoch = small_epoch()
    cfg, clip = AdamConfig(lr=1e-2, betas=(0.9, 0.999), eps=1e-8), 0.05  # a large lr and a small clip
    batched = retrain_heads(w0, bias, weights, epoch, per_sample, cfg, clip)
    assert batched.shape == (3, E, D)
    chunked = retrain_heads(w0, bias, weights, epoch, per_sample, cfg, clip, heads_per_chunk=2)
    torch.testing.assert_close(chunked, batched)
    for h in range(3):
        single = retrain_heads(w0, bias, weights[h : h + 1], epoch, per_sample, cfg, clip)[0]
        torch.testing.assert_close(single, batched[h], rtol=1e-5, atol=1e-6)
        # The reference loop: an nn.Linear head, torch.optim.Adam, clip_grad_value_, frozen bias.
        head = torch.nn.Linear(D, E)
        head.weight.data.copy_(w0)
        head.bias.data.copy_(bias)
        head.bias.requires_grad_(False)
        opt = torch.optim.Adam([head.weight], lr=cfg.lr, eps=cfg.eps)
        for t in range(epoch.num_batches):
            sl = slice(epoch.batch_ptr[t], epoch.batch_ptr[t + 1])
            f = torch.as_tensor(epoch.features[sl])
            y = torch.as_tensor(epoch.labels[sl])
            w = weights[h, torch.as_tensor(epoch.indices[sl])]
            opt.zero_grad()
            (w * per_sample(head(f), y)).mean().backward()
            torch.nn.utils.clip_grad_value_(head.parameters(), clip)
            opt.step()
        torch.testing.assert_close(batched[h], head.weight.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(batched[h], w0, atol=1e-3)
    assert not torch.allclose(batched[0], batched[1], atol=1e-4)  # different weights, different heads


def test_zero_weights_leave_the_head_unchanged(setup):
    w0, bias, per_sample, _ = setup
    w = retrain_heads(w0, bias, torch.zeros(1, N), small_epoch(), per_sample, ADAM, 10.0)
    torch.testing.assert_close(w[0], w0)


def test_sample_weights_sign_and_topk():
    scores = torch.tensor([[0.5, -0.2, 0.0, -3.0, 1.0]])
    assert sample_weights(scores).tolist() == [[0.0, 2.0, 1.0, 2.0, 0.0]]
    assert sample_weights(scores, topk=2).tolist() == [[1.0, 1.0, 1.0, 2.0, 0.0]]
    assert sample_weights(scores, helpful=1.5, harmful=0.5).tolist() == [[0.5, 1.5, 1.0, 1.5, 0.5]]


def test_pair_distance_is_squared_distance_of_normalised_embeddings():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, E, D, generator=g)
    b = torch.randn(E, generator=g)
    f = torch.randn(7, D, generator=g)
    pairs = torch.tensor([[0, 1], [2, 5], [6, 3]])
    d = pair_distance(w, b, f[pairs[:, 0]], f[pairs[:, 1]])
    assert d.shape == (2, 3)
    for h in range(2):
        z = f @ w[h].T + b
        cos = F.cosine_similarity(z[pairs[:, 0]], z[pairs[:, 1]], dim=-1)
        torch.testing.assert_close(d[h], 2 - 2 * cos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(confusion_distance(w, b, f, pairs), d.mean(-1))


def test_augmented_epoch_features_are_reproducible():
    """The stored epoch equals a recomputation from the same seed (real ImageSet, sampler, small CNN)."""
    from eif.data.base import ArrayImageSet
    from eif.data.samplers import BalancedBatchSampler
    from eif.data.transforms import build_transform
    from eif.models import build_model

    tcfg = {
        "mean": [0.5],
        "std": [0.25],
        "train": {"name": "random_resized_crop", "size": 28, "scale": [0.6, 1.0], "flip": True},
        "eval": {"name": "none"},
        "influence": {"name": "none"},
    }
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(C), 10)
    data = ArrayImageSet(rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8), labels)
    torch.manual_seed(0)
    model = build_model(
        {
            "_target_": "eif.models.small_cnn.SmallCnn",
            "name": "cnn",
            "in_channels": 1,
            "feature_dim": D,
            "embedding_size": E,
        }
    ).eval()

    def epoch() -> EpochBatches:
        train_set = data.with_transform(build_transform(tcfg, "train"))
        return augmented_epoch(model.features, train_set, list(BalancedBatchSampler(labels, 2, 4, 7, 0)))

    a = epoch()
    stored = EpochBatches.from_arrays(a.arrays())
    b = epoch()
    for k, v in stored.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k])
    assert a.batch_ptr.tolist() == list(range(0, 8 * (len(labels) - 1) // 8 + 1, 8))
    np.testing.assert_array_equal(a.labels, labels[a.indices])
    # Row 0 is the augmented image of (index, seed), not the plain one.
    train_set = data.with_transform(build_transform(tcfg, "train"))
    x0 = train_set[(int(a.indices[0]), int(a.aug_seeds[0]))][0]
    with torch.no_grad():
        # A batch of 8 and a batch of 1 round differently in float32 convolutions.
        np.testing.assert_allclose(a.features[0], model.features(x0[None])[0].numpy(), rtol=1e-4, atol=1e-5)
        eval_set = data.with_transform(build_transform({**tcfg, "train": {"name": "none"}}, "train"))
        plain = model.features(eval_set[int(a.indices[0])][0][None])[0].numpy()
    assert not np.allclose(a.features[0], plain, atol=1e-4)


@pytest.mark.parametrize(
    "loss_cfg",
    [
        {"_target_": "eif.losses.proxynca_pp.ProxyNCAPPConfig", "name": "proxynca_pp", "scale": 3.0},
        {
            "_target_": "eif.losses.softtriple.SoftTripleConfig",
            "la": 20.0,
            "gamma": 0.1,
            "centers_per_class": 1,
        },
    ],
)
def test_batched_retrain_with_the_project_losses(setup, loss_cfg):
    from eif.losses import build_loss

    w0, bias, _, weights = setup
    torch.manual_seed(0)
    loss = build_loss(loss_cfg, C, E).requires_grad_(False)
    batched = retrain_heads(w0, bias, weights, small_epoch(), loss.per_sample, ADAM, 10.0)
    for h in range(3):
        single = retrain_heads(w0, bias, weights[h : h + 1], small_epoch(), loss.per_sample, ADAM, 10.0)[0]
        torch.testing.assert_close(single, batched[h], rtol=1e-5, atol=1e-6)
    assert loss.proxies.grad is None


def test_magnitude_weights_keep_each_top_sets_total_and_reduce_to_sign_for_equal_magnitudes():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(4, N, generator=g)
    for topk in (None, 7):
        sign = sample_weights(scores, topk=topk)
        mag = magnitude_weights(scores, topk=topk)
        torch.testing.assert_close(mag.sum(1), sign.sum(1))
        for value in (2.0, 0.0, 1.0):  # each top set keeps its total; the unselected rest stays 1
            torch.testing.assert_close((mag * (sign == value)).sum(1), (sign * (sign == value)).sum(1))
        assert (mag >= 0).all() and not torch.equal(mag, sign)
    equal = torch.sign(scores) * 0.37  # equal magnitudes within each set
    torch.testing.assert_close(magnitude_weights(equal), sample_weights(equal))
    torch.testing.assert_close(magnitude_weights(equal, 1.5, 0.5, 7), sample_weights(equal, 1.5, 0.5, 7))
    scores = torch.tensor([[-1.0, -3.0, 0.5, 2.0, 0.0, -2.0]])
    assert magnitude_weights(scores).tolist() == [[1.0, 3.0, 0.0, 0.0, 1.0, 2.0]]
    assert SCHEMES["sign"] is sample_weights and SCHEMES["magnitude"] is magnitude_weights


def test_magnitude_scheme_separates_methods_that_share_their_top_sets(setup):
    """Two score vectors with the same signs (grad_cos vs grad_dot: the same top sets) but different
    magnitudes: the sign scheme gives bit-identical re-trainings, the magnitude one does not."""
    w0, bias, per_sample, _ = setup
    g = torch.Generator().manual_seed(5)
    a = torch.randn(1, N, generator=g)
    b = a.sign() * torch.rand(1, N, generator=g)  # same signs, other magnitudes
    test = torch.randn(6, D, generator=g)
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5]])

    def delta(weights: torch.Tensor) -> float:
        w1 = retrain_heads(w0, bias, weights, small_epoch(), per_sample, ADAM, 10.0)[0]
        return float(confusion_distance(w1, bias, test, pairs) - confusion_distance(w0, bias, test, pairs))

    assert delta(sample_weights(a)) == delta(sample_weights(b))
    assert delta(magnitude_weights(a)) != delta(magnitude_weights(b))
    assert delta(magnitude_weights(a.sign())) == pytest.approx(delta(sample_weights(a)), abs=1e-7)
