"""pytorch-metric-learning adapters against PML itself, the loss contract, and the refusal of
batch-dependent losses (docs/losses.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers
from test_influence_eif import CONFUSIONS, DT, plain_eif
from test_influence_if import SIGNS, dense_parts

from eif.config import load_job
from eif.influence import ConfusionTask, build_batch
from eif.influence.curvature import curvature_z
from eif.influence.solvers import ConjugateGradients, Exact, Lissa
from eif.influence.task import head
from eif.losses import MetricLoss, ProxyNCAPP, build_loss
from eif.losses.base import LossConfig, per_sample_losses
from eif.methods.base import AttributionProblem
from eif.methods.eif import Eif
from eif.methods.influence_function import InfluenceFunction
from eif.pipeline import run_job
from eif.settings import parse
from eif.utils.errors import EifError
from eif.utils.io import load_torch, read_json
from tests.conftest import ROOT, compose_cfg, launch

C, E, B = 5, 8, 16
PML = {
    "proxynca": pml_losses.ProxyNCALoss,
    "normalized_softmax": pml_losses.NormalizedSoftmaxLoss,
    "cosface": pml_losses.CosFaceLoss,
    "arcface": pml_losses.ArcFaceLoss,
}
# non-default settings: the adapters must pass every parameter on as PML reads it
OTHER = {
    "proxynca": {"softmax_scale": 4.0},
    "normalized_softmax": {"temperature": 0.2},
    "cosface": {"margin": 0.2, "scale": 10.0},
    "arcface": {"margin": 40.0, "scale": 10.0},
}
REFUSED = {
    "triplet": "TripletMarginLoss",
    "contrastive": "ContrastiveLoss",
    "multi_similarity": "MultiSimilarityLoss",
}


def node(name: str, **overrides: float) -> dict:
    """conf/loss/<name>.yaml as Hydra composes it, with ``overrides``."""
    return {**yaml.safe_load((ROOT / "conf" / "loss" / f"{name}.yaml").read_text()), **overrides}


def pair(
    name: str, settings: dict, dtype: torch.dtype = DT, seed: int = 0
) -> tuple[MetricLoss, torch.nn.Module]:
    """(adapter, PML module with DoNothingReducer) with the same random weights."""
    torch.manual_seed(seed)
    ours = build_loss(node(name, **settings), C, E).to(dtype)
    pml = PML[name](C, E, **settings, reducer=reducers.DoNothingReducer()).to(dtype)
    pml.load_state_dict(ours.state_dict())  # same names and layouts: proxies (C, E) or W (E, C)
    return ours, pml


def embeddings(ours: MetricLoss, dtype: torch.dtype, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random z (B, E), y (B,); the last four samples point away from their class (cos(z, w_y) < -0.9),
    past ArcFace's theta = pi - m."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(B) % C
    z = 3 * torch.randn(B, E, generator=g, dtype=DT)
    t = ours.cosine_targets().detach().to(DT)
    z[-4:] = -5 * t[y[-4:]] + 0.1 * torch.randn(4, E, generator=g, dtype=DT)
    return z.to(dtype), y


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("settings", ["default", "other"])
@pytest.mark.parametrize("name", list(PML))
def test_per_sample_equals_pml(name, settings, dtype, tol):
    ours, pml = pair(name, {} if settings == "default" else OTHER[name], dtype)
    z, y = embeddings(ours, dtype)
    want = pml(z, y)["loss"]
    assert torch.equal(want["indices"], torch.arange(B))  # PML kept every sample
    got = ours.per_sample(z, y)
    torch.testing.assert_close(got, want["losses"], rtol=tol, atol=tol)
    assert got.abs().max() > 0.1
    if name == "arcface":  # both branches of the margin are exercised
        cos_y = ours.cosines(z).gather(1, y[:, None])[:, 0]
        m = np.radians(ours.margin)
        past = cos_y < -np.cos(m)  # theta > pi - m: PML's continuation
        assert past[-4:].all() and not past.all()


@pytest.mark.parametrize("name", list(PML))
def test_no_regulariser_and_mean_reduction_like_pml(name):
    """PML's defaults apply no weight or embedding regulariser; its default reducer is the mean, like
    ours: the weighted forward with unit weights equals PML's default loss."""
    ours, _ = pair(name, {})
    pml = PML[name](C, E).double()
    assert pml.weight_regularizer is None and pml.embedding_regularizer is None
    pml.load_state_dict(ours.state_dict())
    z, y = embeddings(ours, DT)
    assert ours.regularizer() is None
    torch.testing.assert_close(ours(z, y, torch.ones(B, dtype=DT)), pml(z, y), rtol=1e-12, atol=1e-12)
    ours.load_state_dict(pml.state_dict())  # both ways


def test_proxynca_is_proxynca_pp_with_squared_scale():
    torch.manual_seed(0)
    pp = ProxyNCAPP(C, E, scale=3.0).double()
    nca = build_loss(node("proxynca", softmax_scale=9.0), C, E).double()
    nca.load_state_dict(pp.state_dict())
    z, y = embeddings(nca, DT)
    torch.testing.assert_close(nca.per_sample(z, y), pp.per_sample(z, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(PML))
def test_contract_batched_subset_cosine_form_and_torch_func(name):
    """per_sample on (..., B, E) is per_sample on each slice and on any subset (batch-independent),
    equals its cosine form, and gives each sample's own gradient under vmap."""
    ours, _ = pair(name, OTHER[name])
    assert ours.has_cos_form() and type(ours).batch_independent
    z, y = embeddings(ours, DT)
    zz = torch.stack([z, 0.5 * z + 1, -z])[:, None]  # (3, 1, B, E)
    per = ours.per_sample(zz, y)
    assert per.shape == (3, 1, B)
    for i in range(3):
        torch.testing.assert_close(per[i, 0], ours.per_sample(zz[i, 0], y), rtol=1e-12, atol=1e-12)
    idx = torch.tensor([7, 2, 11])
    torch.testing.assert_close(
        ours.per_sample(z[idx], y[idx]), ours.per_sample(z, y)[idx], rtol=1e-12, atol=0
    )
    t = ours.cosine_targets()
    assert t.shape == (C, E)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(C, dtype=DT))
    torch.testing.assert_close(ours.per_sample_cos(ours.cosines(zz), y), per, rtol=0, atol=0)
    ours.requires_grad_(False)
    each = torch.func.vmap(torch.func.grad(lambda zi, yi: ours.per_sample(zi[None], yi[None])[0]))(z, y)
    summed = torch.func.grad(lambda q: ours.per_sample(q, y).sum())(z)
    torch.testing.assert_close(each, summed, rtol=1e-10, atol=1e-12)
    assert summed.abs().max() > 1e-3


@pytest.mark.parametrize("name", list(PML))
def test_loss_trains(name):
    """A few Adam steps on a linear head and the loss's weights reduce the loss on clustered data."""
    g = torch.Generator().manual_seed(0)
    d, n = 16, 200
    centres = 3 * torch.randn(C, d, generator=g)
    y = torch.arange(n) % C
    feats = centres[y] + torch.randn(n, d, generator=g)
    torch.manual_seed(0)
    loss = build_loss(node(name), C, E)
    w = torch.nn.Linear(d, E)
    opt = torch.optim.Adam([*w.parameters(), *loss.parameters()], lr=0.05)
    history = []
    for _ in range(40):
        value = loss(w(feats), y)
        opt.zero_grad()
        value.backward()
        opt.step()
        history.append(float(value.detach()))
    assert history[-1] < 0.3 * history[0], history[::10]


def problem(name: str, seed: int = 0, n: int = 30, d: int = 6, e: int = 4, c: int = 3) -> AttributionProblem:
    """A tiny float64 head with the PML adapter ``name`` (random weights), as tests/test_methods.py builds."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    settings = {"scale": 4.0} if name in ("cosface", "arcface") else {}  # curvature of a tested size
    loss = build_loss(node(name, **settings), c, e).double()
    return AttributionProblem(
        ConfusionTask.from_loss(loss),
        torch.randn(n, d, generator=g, dtype=DT),
        torch.randint(0, c, (n,), generator=g),
        torch.randn(e, d, generator=g, dtype=DT),
        0.1 * torch.randn(e, generator=g, dtype=DT),
        torch.randn(12, d, generator=g, dtype=DT),
    )


def generic(p: AttributionProblem) -> AttributionProblem:
    """The same problem through the generic (no cosine form) paths."""
    return dataclasses.replace(p, task=ConfusionTask(train_loss=p.task.train_loss))


def parts(p: AttributionProblem) -> dict:
    """The problem as the dense references of tests/test_influence_*.py take it."""
    return dict(
        task=p.task, ftr=p.train_features, ytr=p.train_labels, w=p.weight, b=p.bias, fte=p.test_features
    )


@pytest.mark.parametrize("name", list(PML))
def test_curvature_closed_form_matches_autograd(name):
    p = problem(name)
    loss = p.task.cos_loss
    assert loss is not None
    z = 2 * head(p.train_features[:9], p.weight, p.bias)
    y = p.train_labels[:9]
    ref = torch.stack(
        [
            torch.autograd.functional.hessian(lambda q, i=i: loss.per_sample(q[None], y[i : i + 1])[0], z[i])
            for i in range(9)
        ]
    )
    torch.testing.assert_close(curvature_z(p.task, z, y), ref, rtol=1e-9, atol=1e-10)
    assert ref.abs().max() > 1e-2


@pytest.mark.parametrize("name", list(PML))
def test_eif_cosine_path_equals_generic_and_dense(name):
    p = problem(name)
    batch = build_batch(CONFUSIONS, SIGNS, dtype=DT)
    method = Eif(lr=0.05, max_steps=15, num_thetas=2)
    fast = method.score(p, batch)
    slow = method.score(generic(p), batch)
    assert fast.scores.abs().max() > 1e-3
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-9, atol=1e-11)
    ref, _ = plain_eif(*parts(p).values(), CONFUSIONS, method, SIGNS)
    torch.testing.assert_close(fast.scores, ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", list(PML))
def test_if_exact_and_cg_match_dense_autograd(name):
    p = problem(name)
    batch = build_batch(CONFUSIONS, SIGNS, dtype=DT)
    grads, hess, v, _ = dense_parts(parts(p), CONFUSIONS, SIGNS)
    lam = 0.5 + max(0.0, -float(torch.linalg.eigvalsh(hess)[0]))  # H + lam I positive definite
    ref = torch.linalg.solve(hess + lam * torch.eye(len(hess), dtype=DT), v.T).T @ grads.T
    exact = InfluenceFunction(solver=Exact(damping=lam)).score(p, batch)
    torch.testing.assert_close(exact.scores, ref, rtol=1e-8, atol=1e-10)
    assert exact.scores.abs().max() > 1e-4
    for q in (p, generic(p)):
        cg = InfluenceFunction(solver=ConjugateGradients(damping=lam, tol=1e-12)).score(q, batch)
        torch.testing.assert_close(cg.scores, ref, rtol=1e-6, atol=1e-8 * float(ref.abs().max()))
    lissa = [
        InfluenceFunction(solver=Lissa(scale=50.0, block_size=8)).score(q, batch) for q in (p, generic(p))
    ]
    torch.testing.assert_close(lissa[0].scores, lissa[1].scores, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(REFUSED))
def test_batch_dependent_loss_is_refused_at_validation(name, tmp_path: Path):
    with pytest.raises(EifError) as err:
        parse(LossConfig, node(name), "loss")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"loss: {name} (pytorch-metric-learning's {REFUSED[name]}) is batch-dependent")
    assert "influence (EIF, IF) and re-weighting need per-sample losses" in msg
    assert "loss=arcface, cosface, normalized_softmax, proxynca, proxynca_pp, softtriple" in msg
    with pytest.raises(EifError, match=f"loss: {name} .* is batch-dependent"):
        load_job(compose_cfg(tmp_path, [f"loss={name}", "stages=[train,evaluate,embed,mine,influence]"]))


def test_batch_dependent_loss_is_one_line_from_the_cli(tmp_path: Path):
    proc = launch(["loss=triplet", "stages=[influence]"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: loss: triplet (pytorch-metric-learning's")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("MANIFEST.json"))


def test_batch_dependent_module_is_refused_by_the_influence_task():
    class InBatch(MetricLoss):
        """Each sample against the batch mean: batch-dependent."""

        batch_independent = False

        def per_sample(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (z - z.mean(-2, keepdim=True)).pow(2).sum(-1)

    with pytest.raises(
        EifError, match=r"^InBatch is batch-dependent: .* use a per-sample loss: loss=arcface"
    ):
        ConfusionTask.from_loss(InBatch(C, E))


def test_every_loss_option_is_listed_or_refused():
    """conf/loss/*.yaml: every per-sample loss is named in the refusal line, every other one refused."""
    names = sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml"))
    assert sorted([*per_sample_losses(), *REFUSED]) == names
    for name in per_sample_losses():
        loss = build_loss(node(name), C, E)
        assert type(loss).batch_independent and loss.has_cos_form()


@pytest.mark.slow
def test_pml_loss_trains_and_is_analysed_by_the_pipeline(tmp_path: Path, fmnist_available) -> None:
    """loss=arcface through train (class weights W saved in model.pt), evaluate, embed, mine and
    influence (EIF and IF rebuild the loss from model.pt): the training loss falls, scores are finite."""
    cfg = compose_cfg(
        tmp_path,
        [
            "loss=arcface",
            "train.epochs=3",
            "stages=[influence]",
            "mine.num_pairs=5",
            "methods.if.solver.scale=auto",
        ],
    )
    record = run_job(cfg)
    history = read_json(Path(record["artifacts"]["train"]) / "history.json")
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], history
    assert set(load_torch(Path(record["artifacts"]["train"]) / "model.pt")["loss"]) == {"W"}
    out = Path(record["artifacts"]["influence"])
    for entry in read_json(out / "influence.json")["analyses"]:
        scores = np.load(out / entry["file"])["scores"]
        assert np.isfinite(scores).all() and np.abs(scores).max() > 0
