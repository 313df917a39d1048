"""Bring your own trunk: ``model=torchvision`` / ``model=timm`` with an architecture by name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from eif.models.config import ModelConfig
from eif.pipeline import run_job
from eif.settings import parse
from eif.utils.errors import EifError
from eif.utils.io import load_torch, read_json
from tests.conftest import compose_cfg
from tests.fixtures import make_imagefolder

HAS_TIMM = importlib.util.find_spec("timm") is not None
TV = {
    "_target_": "eif.models.torchvision.TorchvisionTrunk",
    "name": "resnet18",
    "arch": "resnet18",
    "weights": None,
    "in_channels": "auto",
    "feature_dim": "auto",
    "embedding_size": 16,
}


def _digest(path: str) -> str:
    return f"digest of {Path(path).name}"


def _trunk(**kw: object) -> ModelConfig:
    return parse(ModelConfig, {**TV, **kw}, "model")


def _train_to_influence(tmp_path: Path, model: str) -> dict:
    make_imagefolder(tmp_path / "data", per_class=4)  # 6 classes of 8x8 .. 16x12 RGB, RGBA, gray images
    overrides = [
        "dataset=imagefolder",
        f"dataset.root={tmp_path / 'data'}",
        f"model={model}",
        "model.embedding_size=16",
        "train.epochs=1",
        "train.warmup_epochs=0",
        "stages=[train,evaluate,embed,mine,influence]",
        "logger=none",
        "device=cpu",
    ]
    return run_job(compose_cfg(tmp_path, overrides, tiny=False))


def _check_run(record: dict, arch: str, feature_dim: int) -> None:
    assert set(record["compute_seconds"]) == {"train", "evaluate", "embed", "mine", "influence"}
    assert (
        record["resolved"]["model.feature_dim"] == feature_dim
        and record["resolved"]["model.in_channels"] == 3
    )
    ck = load_torch(Path(record["artifacts"]["train"]) / "model.pt")
    assert ck["model_cfg"]["arch"] == arch and ck["model"]["head.weight"].shape == (16, feature_dim)
    info = read_json(Path(record["artifacts"]["embed"]) / "embed.json")
    assert info["feature_dim"] == feature_dim and info["train_class_names"] == ["ant", "bee", "cat"]
    analyses = read_json(Path(record["artifacts"]["influence"]) / "influence.json")["analyses"]
    assert {a["method"] for a in analyses} == {"eif", "if"}


def test_torchvision_resnet18_runs_train_to_influence(tmp_path: Path) -> None:
    _check_run(_train_to_influence(tmp_path, "torchvision"), "resnet18", 512)


@pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed (pip install 'eif[timm]')")
def test_timm_resnet18_runs_train_to_influence(tmp_path: Path) -> None:
    _check_run(_train_to_influence(tmp_path, "timm"), "resnet18", 512)


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed")
def test_timm_missing_is_one_line() -> None:
    with pytest.raises(EifError, match=r"model.arch: timm is not installed: pip install 'eif\[timm\]'"):
        parse(ModelConfig, {**TV, "_target_": "eif.models.timm.TimmTrunk"}, "model")


@pytest.mark.parametrize(
    "arch,dim",
    [("resnet18", 512), ("densenet121", 1024), ("mobilenet_v3_small", 576), ("regnet_x_400mf", 400)],
)
def test_feature_dim_comes_from_the_architecture(arch: str, dim: int) -> None:
    resolved = _trunk(arch=arch).resolve(1, _digest)
    assert (resolved.feature_dim, resolved.in_channels) == (dim, 1)
    model = resolved.build().eval()
    assert model.features(torch.randn(2, 1, 64, 64)).shape == (2, dim)  # first conv takes 1 channel
    with pytest.raises(EifError, match=f"model.feature_dim=7, but {arch}'s trunk gives {dim}"):
        _trunk(arch=arch, feature_dim=7).resolve(1, _digest)


def test_architectures_without_a_feature_map_or_unknown_are_one_line() -> None:
    with pytest.raises(EifError, match="model.arch=vit_b_16: eif needs a convolutional trunk"):
        _trunk(arch="vit_b_16").resolve(3, _digest)
    with pytest.raises(EifError, match="model.arch: 'resnet19' is not a torchvision classification model"):
        _trunk(arch="resnet19")


def test_local_weights_file_loads_the_trunk_and_keys_its_content(tmp_path: Path) -> None:
    net = torchvision.models.resnet18(num_classes=7)  # another classifier: not part of the trunk
    nn.init.normal_(net.layer4[1].bn2.running_var)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    cfg = _trunk(weights=str(tmp_path / "r18.pth"))
    assert cfg.pretrained and cfg.weights_problem() is None
    resolved = cfg.resolve(3, _digest)
    assert resolved.weights_digest == "digest of r18.pth"
    trunk = resolved.build().trunk
    assert torch.equal(trunk.conv1.weight, net.conv1.weight)
    assert torch.equal(trunk.layer4[1].bn2.running_var, net.layer4[1].bn2.running_var)
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    problem = _trunk(weights=str(tmp_path / "r34.pth")).weights_problem()
    assert (
        problem is not None and "does not fit the architecture" in problem and "unknown (layer1.2." in problem
    )


def test_hub_weights_offline_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    problem = _trunk(weights="IMAGENET1K_V1").weights_problem()
    file = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert problem is not None and str(file) in problem and "TORCH_HOME" in problem and "\n" not in problem
    assert "neither a weights name of resnet18" in str(_trunk(weights="IMAGENET9").weights_problem())
    with pytest.raises(EifError, match="weights need in_channels=3"):
        _trunk(weights="IMAGENET1K_V1", in_channels=1)


@pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed (pip install 'eif[timm]')")
def test_timm_weights_file_loads_without_its_classifier(tmp_path: Path) -> None:
    import timm

    net = timm.create_model("resnet18", num_classes=7)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    cfg = parse(
        ModelConfig,
        {**TV, "_target_": "eif.models.timm.TimmTrunk", "weights": str(tmp_path / "w.pth")},
        "model",
    )
    assert cfg.pretrained and cfg.weights_problem() is None
    resolved = cfg.resolve(3, _digest)
    assert (resolved.feature_dim, resolved.weights_digest) == (512, "digest of w.pth")
    assert torch.equal(resolved.build().trunk.net.conv1.weight, net.conv1.weight)
