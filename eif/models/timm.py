"""``model=timm``: any timm model with a convolutional feature map, by name (optional extra ``eif[timm]``).

The trunk is ``timm.create_model(arch, pretrained=False, num_classes=0, global_pool="",
in_chans=in_channels).forward_features`` (the feature map before pooling), then eif's global max
pool, LayerNorm (no affine) and head. ``weights``: null (random init) or a local state dict file
(``.pth``) of the network; timm's own downloads are never used (eif runs offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn

from eif.models.arch import ArchTrunk
from eif.models.embedder import Embedder
from eif.models.torchvision import load_weights_file, probe_feature_dim
from eif.settings import DISPLAY, setting
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


class TimmTrunk(ArchTrunk):
    """``model=timm``: ``arch`` (a timm model name, e.g. ``resnet18``) as the trunk; ``weights`` is a
    local state dict file or null (:class:`~eif.models.arch.ArchTrunk`)."""

    provider: ClassVar[str] = "timm"
    name: str = setting("timm", unkeyed=DISPLAY)

    @classmethod
    def arch_names(cls) -> list[str]:
        return _timm().list_models()

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

    def _loaded(self, net: nn.Module) -> nn.Module:
        """``net`` with the ``weights`` file loaded (its classifier, named by timm's pretrained_cfg, is not
        part of the trunk)."""
        # timm sets pretrained_cfg as a plain dict attribute, which nn.Module's __getattr__ types as a
        # Tensor or Module.
        pretrained_cfg = cast(dict[str, Any], net.pretrained_cfg)
        head = pretrained_cfg.get("classifier") or ()
        load_weights_file(
            net, str(self.weights), lambda k: True, (head,) if isinstance(head, str) else tuple(head)
        )
        return net

    def build(self, pretrained: bool | None = None) -> Embedder:
        net = self._network(int(self.in_channels))
        if self.pretrained if pretrained is None else pretrained:
            self._loaded(net)
        return Embedder(ForwardFeatures(net), self.feature_dim, self.embedding_size)
