"""ProxyNCA++ and SoftTriple: formulas, pytorch-metric-learning equivalence, weights, torch.func."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers, regularizers

from eif.losses import MetricLoss, ProxyNCAPP, SoftTriple, build_loss
from eif.utils.errors import EifError

C, E, B = 5, 8, 12


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, E, generator=g) * 3
    y = torch.arange(B) % C
    return z, y


def _softtriple_pml(ours: SoftTriple) -> pml_losses.SoftTripleLoss:
    k = ours.centers_per_class
    reg = regularizers.SparseCentersRegularizer(C, k) if k > 1 else None
    pml = pml_losses.SoftTripleLoss(
        C,
        E,
        centers_per_class=k,
        la=ours.la,
        gamma=ours.gamma,
        margin=ours.margin,
        weight_regularizer=reg,
        weight_reg_weight=ours.tau,
    )
    with torch.no_grad():
        pml.fc.copy_(ours.proxies.T)  # PML stores centres as columns (E, C*K), class-major like ours
    return pml


def test_proxynca_pp_matches_float64_formula(batch):
    z, y = batch
    torch.manual_seed(1)
    loss = ProxyNCAPP(C, E)
    x = z.double().numpy()
    p = loss.proxies.detach().double().numpy()
    xs = 3 * x / np.linalg.norm(x, axis=1, keepdims=True)
    ps = 3 * p / np.linalg.norm(p, axis=1, keepdims=True)
    d = ((xs[:, None, :] - ps[None, :, :]) ** 2).sum(-1)
    logits = -d
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    expected = -logp[np.arange(B), y.numpy()]
    got = loss.per_sample(z, y).detach().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert float(loss(z, y)) == pytest.approx(expected.mean(), rel=1e-5)


def test_proxynca_pp_matches_reference_cdist_formulation(batch):
    """The reference builds the squared distances of [X; P] with a pairwise-distance matrix."""
    z, y = batch
    loss = ProxyNCAPP(C, E)
    x = 3 * torch.nn.functional.normalize(z, dim=-1)
    p = 3 * torch.nn.functional.normalize(loss.proxies.detach(), dim=-1)
    both = torch.cat([x, p])
    d = torch.cdist(both, both).pow(2)[:B, B:]
    ref = torch.sum(-torch.nn.functional.one_hot(y, C) * torch.log_softmax(-d, -1), -1)
    torch.testing.assert_close(loss.per_sample(z, y).detach(), ref, rtol=1e-4, atol=1e-4)


def test_proxynca_pp_init_scale():
    torch.manual_seed(0)
    p = ProxyNCAPP(200, 512).proxies.detach()
    assert p.shape == (200, 512)
    assert p.std().item() == pytest.approx(1 / 8, rel=0.02)


@pytest.mark.parametrize("k", [1, 3])
def test_softtriple_matches_pml(batch, k):
    z, y = batch
    torch.manual_seed(2)
    ours = SoftTriple(C, E, centers_per_class=k)
    pml = _softtriple_pml(ours)
    torch.testing.assert_close(ours(z, y), pml(z, y), rtol=1e-5, atol=1e-6)
    if k > 1:
        assert float(ours.regularizer()) > 0.01  # the regulariser is active and part of the match
    pml_each = pml_losses.SoftTripleLoss(
        C,
        E,
        centers_per_class=k,
        la=ours.la,
        gamma=ours.gamma,
        margin=ours.margin,
        reducer=reducers.DoNothingReducer(),
    )
    with torch.no_grad():
        pml_each.fc.copy_(ours.proxies.T)
    per_pml = pml_each(z, y)["loss"]["losses"]
    torch.testing.assert_close(ours.per_sample(z, y), per_pml, rtol=1e-5, atol=1e-6)


def test_softtriple_k1_has_no_regulariser_and_kaiming_init():
    torch.manual_seed(0)
    loss = SoftTriple(100, 512, centers_per_class=1)
    assert float(loss.regularizer()) == 0.0
    # kaiming_normal_(fan_out) on (C*K, E): std = sqrt(2 / (C*K))
    assert loss.proxies.detach().std().item() == pytest.approx((2 / 100) ** 0.5, rel=0.02)


@pytest.mark.parametrize("name", ["proxynca_pp", "softtriple"])
def test_weights_scale_per_sample_terms(batch, name):
    z, y = batch
    loss = build_loss(_cfg(name), C, E)
    per = loss.per_sample(z, y)
    w = torch.tensor([2.0, 0.0, 1.0] * (B // 3))
    expected = (2 * per[0::3].sum() + per[2::3].sum()) / B  # divide by B, not by sum(w)
    torch.testing.assert_close(loss(z, y, w), expected)
    torch.testing.assert_close(loss(z, y, torch.ones(B)), loss(z, y))
    # A weight-0 sample has no influence on the loss or on the proxy gradient.
    z2 = z.clone()
    z2[1] = torch.randn(E) * 10
    torch.testing.assert_close(loss(z2, y, w), loss(z, y, w))
    g1 = torch.autograd.grad(loss(z, y, w), loss.proxies)[0]
    g2 = torch.autograd.grad(loss(z2, y, w), loss.proxies)[0]
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("name", ["proxynca_pp", "softtriple"])
def test_per_sample_broadcasts_over_leading_dims(batch, name):
    z, y = batch
    loss = build_loss(_cfg(name), C, E)
    zz = torch.stack([z, 2 * z + 1, -z])[:, None]  # (3, 1, B, E)
    per = loss.per_sample(zz, y)
    assert per.shape == (3, 1, B)
    for i, zi in enumerate([z, 2 * z + 1, -z]):
        torch.testing.assert_close(per[i, 0], loss.per_sample(zi, y))
    assert loss(zz, y).shape == (3, 1)


@pytest.mark.parametrize("name", ["proxynca_pp", "softtriple"])
def test_vmap_grad_over_heads_equals_loop(name):
    """vmap over a batch of linear heads (and of proxies) of grad of the loss equals a Python loop."""
    torch.manual_seed(3)
    d, n_heads = 6, 4
    loss = build_loss(_cfg(name, k=2), C, E)
    feats = torch.randn(B, d)
    y = torch.arange(B) % C
    heads = torch.randn(n_heads, E, d)
    proxies = loss.proxies.detach() + 0.1 * torch.randn(n_heads, *loss.proxies.shape)

    def objective(w: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(loss, {"proxies": p}, (feats @ w.T, y))

    grads = torch.func.vmap(torch.func.grad(objective, argnums=(0, 1)))(heads, proxies)
    for h in range(n_heads):
        w = heads[h].clone().requires_grad_(True)
        p = proxies[h].clone().requires_grad_(True)
        gw, gp = torch.autograd.grad(objective(w, p), (w, p))
        torch.testing.assert_close(grads[0][h], gw, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[1][h], gp, rtol=1e-5, atol=1e-6)
    # jvp works too (forward-mode through normalise / softmax)
    tangent = torch.randn(E, d)
    _, jv = torch.func.jvp(lambda w: objective(w, proxies[0]), (heads[0],), (tangent,))
    eps = 1e-3
    fd = (
        objective(heads[0] + eps * tangent, proxies[0]) - objective(heads[0] - eps * tangent, proxies[0])
    ) / (2 * eps)
    assert float(jv) == pytest.approx(float(fd), rel=1e-2, abs=1e-4)


@pytest.mark.parametrize("name", ["proxynca_pp", "softtriple"])
def test_per_sample_gradients_with_vmapped_labels(batch, name):
    """vmap over (z_i, y_i) pairs (labels batched too) gives each sample's own loss gradient."""
    z, y = batch
    loss = build_loss(_cfg(name, k=2), C, E)
    per_grad = torch.func.vmap(torch.func.grad(lambda zi, yi: loss.per_sample(zi[None], yi[None])[0]))(z, y)
    summed = torch.func.grad(lambda zz: loss.per_sample(zz, y).sum())(z)
    torch.testing.assert_close(per_grad, summed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["proxynca_pp", "softtriple"])
def test_state_dict_round_trip_keeps_proxies(batch, name):
    z, y = batch
    a = build_loss(_cfg(name), C, E)
    b = build_loss(_cfg(name), C, E)
    assert not torch.equal(a.proxies, b.proxies)
    assert set(a.state_dict()) == {"proxies"}
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(z, y), a(z, y))


def test_build_loss_rejects_bad_config():
    with pytest.raises(EifError, match="loss: needs a _target_"):
        build_loss({"name": "triplet"}, C, E)
    with pytest.raises(EifError, match=r"loss: cannot import _target_ 'eif\.losses\.Triplet'"):
        build_loss({"_target_": "eif.losses.Triplet"}, C, E)
    with pytest.raises(EifError, match="loss.centers_per_class: input should be greater than 0"):
        build_loss(_cfg("softtriple", k=0), C, E)


def _cfg(name: str, k: int = 1) -> dict:
    """The loss's YAML node, as conf/loss/<name>.yaml writes it."""
    if name == "proxynca_pp":
        return {"_target_": "eif.losses.proxynca_pp.ProxyNCAPPConfig", "name": name, "scale": 3.0}
    return {
        "_target_": "eif.losses.softtriple.SoftTripleConfig",
        "name": name,
        "la": 20.0,
        "gamma": 0.1,
        "tau": 0.2,
        "margin": 0.01,
        "centers_per_class": k,
    }


@pytest.mark.parametrize("name", ["proxynca_pp", "softtriple"])
def test_per_sample_cos_agrees_with_per_sample(batch, name):
    """per_sample_cos of cosines computed independently (float64 numpy) is per_sample, over leading dims."""
    z, y = batch
    loss = build_loss(_cfg(name, k=3), C, E).double()
    assert loss.has_cos_form()
    zz = torch.stack([z, 2 * z - 1]).double()  # (2, B, E)
    x = zz.numpy() / np.linalg.norm(zz.numpy(), axis=-1, keepdims=True)
    p = loss.proxies.detach().numpy()
    cos = torch.from_numpy(x @ (p / np.linalg.norm(p, axis=-1, keepdims=True)).T)  # (2, B, C*K)
    via_cos = loss.per_sample_cos(cos, y)
    assert via_cos.shape == (2, B)
    torch.testing.assert_close(via_cos, loss.per_sample(zz, y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.cosines(zz), cos, rtol=1e-12, atol=1e-12)


def test_loss_without_cos_form_keeps_its_per_sample(batch):
    """A loss that overrides per_sample only reports no cosine form and refuses per_sample_cos."""
    z, y = batch

    class Euclidean(ProxyNCAPP):
        per_sample_cos = MetricLoss.per_sample_cos

        def per_sample(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (z - self.proxies[y]).pow(2).sum(-1)

    loss = Euclidean(C, E)
    assert not loss.has_cos_form() and ProxyNCAPP.has_cos_form()
    torch.testing.assert_close(loss.per_sample(z, y), (z - loss.proxies[y]).pow(2).sum(-1))
    with pytest.raises(NotImplementedError, match="no cosine form"):
        loss.per_sample_cos(loss.cosines(z), y)
