"""The paper's model: torchvision ResNet-50 (conv1 .. layer4) as the trunk of an :class:`Embedder`."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from urllib.error import URLError

import torch
from pydantic import model_validator
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from eif.models.config import ModelConfig
from eif.models.embedder import Embedder
from eif.settings import AUTO, DISPLAY, setting
from eif.utils.errors import EifError

RESNET50_FEATURE_DIM = 2048
# The layers of torchvision's ResNet that form the trunk; ``avgpool`` and ``fc`` are dropped.
_TRUNK_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet50_weights_file() -> str:
    """Where torchvision caches the ImageNet weights: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    name = os.path.basename(ResNet50_Weights.IMAGENET1K_V1.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def _imagenet_resnet50() -> nn.Module:
    try:
        return resnet50(weights=ResNet50_Weights.IMAGENET1K_V1)
    except (URLError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise EifError(
            f"cannot load the ImageNet ResNet-50 weights ({type(exc).__name__}: {exc}); download "
            f"{ResNet50_Weights.IMAGENET1K_V1.url} to {resnet50_weights_file()} (TORCH_HOME sets the cache "
            "directory) or set model.pretrained=false"
        ) from exc


def resnet50_trunk(pretrained: bool, in_channels: int = 3) -> nn.Sequential:
    """ResNet-50 conv1 .. layer4: (B, in_channels, H, W) -> (B, 2048, H/32, W/32).

    Submodule names equal torchvision's (``conv1``, ``layer1``, ...), so state_dict keys map 1:1.
    ``in_channels != 3`` replaces conv1 by a randomly initialised one (not with pretrained weights).
    """
    if pretrained and in_channels != 3:
        raise EifError(f"model.pretrained=true needs in_channels=3 (ImageNet weights), got {in_channels}")
    net = _imagenet_resnet50() if pretrained else resnet50(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in _TRUNK_LAYERS))


def build_resnet50(pretrained: bool, embedding_size: int = 512, in_channels: int = 3) -> Embedder:
    """The reference model: ResNet-50 trunk, max pool, LayerNorm(2048, no affine), Linear(2048 -> E)."""
    return Embedder(resnet50_trunk(pretrained, in_channels), RESNET50_FEATURE_DIM, embedding_size)


class ResNet50(ModelConfig):
    """``model=resnet50``: the paper's model; ``pretrained`` loads torchvision's ImageNet weights."""

    name: str = setting("resnet50", unkeyed=DISPLAY)

    @model_validator(mode="after")
    def _shape(self) -> ResNet50:
        if self.feature_dim not in (RESNET50_FEATURE_DIM, AUTO):
            raise ValueError(
                f"feature_dim must be {RESNET50_FEATURE_DIM} for resnet50, got {self.feature_dim}"
            )
        if self.pretrained and self.in_channels not in (3, AUTO):
            raise ValueError(
                f"pretrained=true needs in_channels=3 (ImageNet weights), got {self.in_channels}"
            )
        return self

    def native_feature_dim(self, in_channels: int) -> int:
        return RESNET50_FEATURE_DIM

    def build(self, pretrained: bool | None = None) -> Embedder:
        use = self.pretrained if pretrained is None else pretrained
        return build_resnet50(use, self.embedding_size, self.in_channels)

    def weights_problem(self) -> str | None:
        if not self.pretrained or os.path.isfile(resnet50_weights_file()):
            return None
        return (
            f"model.pretrained=true needs the ImageNet ResNet-50 weights at {resnet50_weights_file()} "
            f"(download {ResNet50_Weights.IMAGENET1K_V1.url} there; TORCH_HOME sets the cache directory) "
            "or set model.pretrained=false"
        )
