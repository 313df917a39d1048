"""Embedder, the paper's ResNet-50, the small CNN, and loading the reference code's checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from eif.losses import build_loss
from eif.models import Embedder, build_model
from eif.models.reference import load_reference_checkpoint
from eif.utils.errors import EifError
from eif.utils.io import save_torch

RESNET_CFG = {
    "_target_": "eif.models.resnet.ResNet50",
    "name": "resnet50",
    "in_channels": 3,
    "feature_dim": 2048,
    "embedding_size": 32,
    "pretrained": False,
}
CNN_CFG = {
    "_target_": "eif.models.small_cnn.SmallCnn",
    "name": "small_cnn",
    "in_channels": 1,
    "feature_dim": 256,
    "embedding_size": 64,
    "pretrained": False,
}
PNCA_CFG = {"_target_": "eif.losses.proxynca_pp.ProxyNCAPPConfig", "name": "proxynca_pp", "scale": 3.0}


def _train_steps(model: Embedder, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> list[float]:
    loss_fn = build_loss(PNCA_CFG, int(y.max()) + 1, model.embedding_size)
    opt = torch.optim.Adam(
        [{"params": model.parameters(), "lr": lr}, {"params": loss_fn.parameters(), "lr": 1e-2}]
    )
    model.train()
    history = []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def test_resnet50_shapes_and_training_reduces_loss():
    torch.manual_seed(0)
    model = build_model(RESNET_CFG)
    x = torch.randn(8, 3, 64, 64)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    feats = model.features(x)
    assert feats.shape == (8, 2048)
    # LayerNorm without affine: zero mean, unit variance per row
    torch.testing.assert_close(feats.mean(1), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.var(1, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    assert model.head.weight.shape == (32, 2048) and model.head.bias.shape == (32,)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())  # no affine LayerNorm parameters
    history = _train_steps(model, x, y, steps=4, lr=1e-4)
    assert history[-1] < 0.5 * history[0], history


def test_small_cnn_shapes_and_training_reduces_loss():
    torch.manual_seed(0)
    model = build_model(CNN_CFG)
    x = torch.randn(16, 1, 28, 28)
    y = torch.arange(16) % 4
    assert model.features(x).shape == (16, 256)
    assert model(x).shape == (16, 64)
    history = _train_steps(model, x, y, steps=10, lr=1e-3)
    assert history[-1] < 0.5 * history[0], history


def test_forward_is_head_of_features():
    torch.manual_seed(0)
    model = build_model(CNN_CFG).eval()
    x = torch.randn(4, 1, 28, 28)
    f = model.features(x)
    torch.testing.assert_close(model(x), f @ model.head.weight.T + model.head.bias)


def test_build_model_rejects_bad_config():
    with pytest.raises(EifError, match=r"model: cannot import _target_ 'eif\.models\.Vgg'"):
        build_model({**CNN_CFG, "_target_": "eif.models.Vgg"})
    with pytest.raises(EifError, match="model: feature_dim must be 2048 for resnet50, got 512"):
        build_model({**RESNET_CFG, "feature_dim": 512})
    with pytest.raises(EifError, match="in_channels=3"):
        build_model({**RESNET_CFG, "in_channels": 1, "pretrained": True})
    with pytest.raises(EifError, match="model.embedding_size: input should be greater than 0"):
        build_model({**CNN_CFG, "embedding_size": 0})
    with pytest.raises(EifError, match="model.depth: unknown setting"):
        build_model({**CNN_CFG, "depth": 3})


def test_pretrained_weights_unavailable_is_one_clear_error(tmp_path, monkeypatch):
    """An unreadable cached weights file (no network needed) gives an EifError naming the cache file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not a checkpoint")
    with pytest.raises(EifError) as err:
        build_model({**RESNET_CFG, "pretrained": True})
    msg = str(err.value)
    assert "\n" not in msg and str(cache) in msg and "TORCH_HOME" in msg


class _ReferenceTrunk(nn.Module):
    """The reference's feature extractor: ``base`` = a full torchvision ResNet-50 (``fc`` unused)."""

    def __init__(self) -> None:
        super().__init__()
        self.base = resnet50(weights=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        x = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x))))))))
        x = nn.functional.adaptive_max_pool2d(x, 1).flatten(1)
        return nn.functional.layer_norm(x, (2048,))


def _reference_files(tmp_path, num_classes: int = 3) -> tuple[nn.Module, torch.Tensor, object, object]:
    torch.manual_seed(1)
    ref = nn.Sequential(_ReferenceTrunk(), nn.Linear(2048, 32))
    for m in ref.modules():  # non-default BN statistics, so a skipped buffer would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.8, 1.2)
    ref.eval()
    proxies = nn.Parameter(torch.randn(num_classes, 32))
    model_path, proxy_path = tmp_path / "model.pth", tmp_path / "proxy.pth"
    save_torch(model_path, nn.DataParallel(ref).state_dict())
    save_torch(proxy_path, {"proxies": proxies})
    return ref, proxies.detach(), model_path, proxy_path


def test_reference_checkpoint_round_trip(tmp_path):
    ref, proxies, model_path, proxy_path = _reference_files(tmp_path)
    keys = torch.load(model_path, weights_only=True).keys()
    assert {"module.0.base.conv1.weight", "module.0.base.fc.weight", "module.1.bias"} <= set(keys)
    model = build_model(RESNET_CFG).eval()
    loss = build_loss(PNCA_CFG, 3, 32)
    load_reference_checkpoint(model_path, proxy_path, model, loss)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        torch.testing.assert_close(model.features(x), ref[0](x))
    torch.testing.assert_close(loss.proxies.detach(), proxies)


def test_reference_checkpoint_mismatch_is_one_clear_error(tmp_path):
    _, _, model_path, proxy_path = _reference_files(tmp_path)
    with pytest.raises(EifError, match="does not match"):  # head 2048 -> 64 expected, file has 32
        load_reference_checkpoint(model_path, None, build_model({**RESNET_CFG, "embedding_size": 64}))
    with pytest.raises(EifError, match="shape"):  # 5 classes expected, file has 3
        load_reference_checkpoint(
            model_path, proxy_path, build_model(RESNET_CFG), build_loss(PNCA_CFG, 5, 32)
        )
    from eif.losses.pml import ArcFaceConfig

    with pytest.raises(EifError, match="loss ArcFace.* has none"):  # no proxies to load into
        load_reference_checkpoint(
            model_path, proxy_path, build_model(RESNET_CFG), ArcFaceConfig().build(3, 32)
        )
    wrong = tmp_path / "wrong.pth"
    save_torch(wrong, {"module.features.weight": torch.zeros(2)})
    with pytest.raises(EifError, match="unexpected keys"):
        load_reference_checkpoint(wrong, None, build_model(RESNET_CFG))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"xx")
    with pytest.raises(EifError, match="cannot read"):
        load_reference_checkpoint(garbage, None, build_model(RESNET_CFG))
