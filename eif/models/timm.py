"""``model=timm``: any timm model with a convolutional feature map, by name (optional extra ``eif[timm]``).

The trunk is ``timm.create_model(arch, pretrained=False, num_classes=0, global_pool="",
in_chans=in_channels).forward_features`` (the feature map before pooling), then eif's global max
pool, LayerNorm (no affine) and head. ``weights``: null (random init) or a local state dict file
(``.pth``) of the network; timm's own downloads are never used (eif runs offline).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import field_validator, model_validator
from torch import nn

from eif.models.config import ModelConfig
from eif.models.embedder import Embedder
from eif.models.torchvision import load_weights_file, probe_feature_dim
from eif.settings import AUTO, DISPLAY, setting
from eif.utils.errors import EifError


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ValueError("timm is not installed: pip install 'eif[timm]' (or pip install timm)") from None
    return timm


class ForwardFeatures(nn.Module):
    """A timm network's ``forward_features``: images -> the feature map before pooling."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # type: ignore[operator]


class TimmTrunk(ModelConfig):
    """``model=timm``: ``arch`` (a timm model name, e.g. ``resnet18``) as the trunk.

    ``pretrained`` follows ``weights``; ``weights_digest`` is the weights file's content hash, filled in
    when the job runs, so an edited file trains a new model."""

    name: str = setting("timm", unkeyed=DISPLAY)
    arch: str = "resnet18"
    weights: str | None = None
    weights_digest: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _pretrained_from_weights(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = data.get("pretrained")
            if given is not None and bool(given) != (data.get("weights") is not None):
                raise ValueError("pretrained follows weights: set model.weights to a local weights file")
            data = {**data, "pretrained": data.get("weights") is not None}
        return data

    @field_validator("arch")
    @classmethod
    def _known(cls, arch: str) -> str:
        timm = _timm()
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{arch!r} is not a timm model{hint}")
        return arch

    @model_validator(mode="after")
    def _channels(self) -> TimmTrunk:
        if self.pretrained and self.in_channels not in (3, AUTO):
            raise ValueError(f"weights need in_channels=3 (ImageNet images), got {self.in_channels}")
        return self

    def _network(self, in_channels: int) -> nn.Module:
        return _timm().create_model(
            self.arch, pretrained=False, num_classes=0, global_pool="", in_chans=in_channels
        )

    def weights_problem(self) -> str | None:
        if self.weights is None:
            return None
        if not Path(self.weights).is_file():
            return (
                f"model.weights: {self.weights} is not a file (timm weights are read from local files only)"
            )
        try:  # load it once now: a file that does not fit fails before anything is computed
            self._loaded(self._network(3))
        except EifError as err:
            return str(err)
        return None

    def native_feature_dim(self, in_channels: int) -> int:
        return probe_feature_dim(lambda: ForwardFeatures(self._network(3)), self.arch)

    def needs_resolving(self) -> bool:
        return True  # feature_dim is checked against the architecture, a weights file is hashed

    def resolve(self, in_channels: int, file_digest: Callable[[str], str]) -> ModelConfig:
        native = self.native_feature_dim(in_channels)
        if self.feature_dim not in (AUTO, native):
            raise EifError(
                f"model.feature_dim={self.feature_dim}, but {self.arch}'s trunk gives {native} (use auto)"
            )
        out = super().resolve(in_channels, file_digest)
        if self.weights is not None:
            problem = None if Path(self.weights).is_file() else self.weights_problem()
            if problem:
                raise EifError(problem)
            out = out.model_copy(update={"weights_digest": file_digest(self.weights)})
        return out

    def _loaded(self, net: nn.Module) -> nn.Module:
        """``net`` with the ``weights`` file loaded (its classifier, named by timm's pretrained_cfg, is not
        part of the trunk)."""
        head = net.pretrained_cfg.get("classifier") or ()
        load_weights_file(
            net, str(self.weights), lambda k: True, (head,) if isinstance(head, str) else tuple(head)
        )
        return net

    def build(self, pretrained: bool | None = None) -> Embedder:
        net = self._network(int(self.in_channels))
        if self.pretrained if pretrained is None else pretrained:
            self._loaded(net)
        return Embedder(ForwardFeatures(net), self.feature_dim, self.embedding_size)
