"""``model=torchvision``: any torchvision classification CNN, by name, as the trunk of an :class:`Embedder`.

The trunk is the network's convolutional part: its children up to (not including) the global pooling
or classifier, without auxiliary classifiers (:func:`conv_trunk`); then eif's global max pool,
LayerNorm (no affine) and head, as for every model. ``feature_dim`` is the trunk's channel count,
found by running it on a meta tensor (no weights, no compute). ``weights``: null (random init), a
torchvision weights name of the architecture (``IMAGENET1K_V1``, ``DEFAULT``, ...: the file must be in
torch's hub cache, nothing is downloaded), or a local ``.pth`` state dict of the whole network.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision.models as tvm
from torch import nn

from eif.models.arch import ArchTrunk
from eif.models.embedder import Embedder
from eif.settings import DISPLAY, setting
from eif.utils.errors import EifError

PROBE_PX = 224  # side of the meta-tensor image that the trunk's output size is read from
# Children that end the convolutional part, and auxiliary classifiers in its middle (GoogLeNet, Inception).
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_HEADS = ("fc", "classifier", "head", "heads")
_AUX = ("aux1", "aux2", "AuxLogits")


def conv_trunk(net: nn.Module, arch: str) -> nn.Sequential:
    """The children of ``net`` before its global pooling or classifier (auxiliary heads skipped), as one
    ``nn.Sequential`` (a ``ModuleList`` of blocks becomes a ``Sequential``). DenseNet applies its last
    ReLU in ``forward``: it is appended."""
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    for name, child in net.named_children():
        if isinstance(child, _POOLS) or name in _HEADS:
            break
        if name in _AUX:
            continue
        parts[name] = nn.Sequential(*child) if isinstance(child, nn.ModuleList) else child
    if arch.startswith("densenet"):
        parts["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(parts)


def replace_first_conv(trunk: nn.Module, in_channels: int) -> None:
    """Give the first ``nn.Conv2d`` of ``trunk`` ``in_channels`` inputs (a new, randomly initialised one)."""
    for name, module in trunk.named_modules():
        if isinstance(module, nn.Conv2d):
            parent = trunk.get_submodule(name.rpartition(".")[0]) if "." in name else trunk
            conv = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,  # type: ignore[arg-type]
                module.stride,  # type: ignore[arg-type]
                module.padding,  # type: ignore[arg-type]
                module.dilation,  # type: ignore[arg-type]
                bias=module.bias is not None,
            )
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            setattr(parent, name.rpartition(".")[2], conv)
            return
    raise EifError("model.in_channels: the trunk has no Conv2d whose input channels could be changed")


def probe_feature_dim(make: Callable[[], nn.Module], arch: str) -> int:
    """Channels of ``make()``'s output for a 3 x 224 x 224 image, on the meta device when the network
    can be built there (no memory, no compute), else on the CPU."""
    try:
        with torch.device("meta"):
            trunk = make()
        x = torch.empty(1, 3, PROBE_PX, PROBE_PX, device="meta")
    except (NotImplementedError, RuntimeError):  # builders that compute with tensors (RegNet)
        trunk, x = make(), torch.zeros(1, 3, PROBE_PX, PROBE_PX)
    try:
        with torch.no_grad():
            out = trunk.eval()(x)
    except Exception as err:  # noqa: BLE001 - any failure means the same: not a feature-map trunk
        out, why = None, " ".join(str(err).split())[:120]
    else:
        why = f"it gives shape {tuple(out.shape)}"
    if out is None or out.dim() != 4:
        raise EifError(
            f"model.arch={arch}: eif needs a convolutional trunk that gives a (B, C, h, w) feature map; "
            f"{arch}'s does not ({why})"
        )
    return int(out.shape[1])


def load_weights_file(
    net: nn.Module, path: str, keep: Callable[[str], bool], ignore: tuple[str, ...] = ()
) -> None:
    """Load the state dict in ``path`` (``torch.save`` of ``net.state_dict()``, optionally under a
    ``state_dict`` key or with DataParallel's ``module.`` prefix) into ``net``: every key for which
    ``keep`` is true must be in it, with its shape, and it must hold no key ``net`` lacks besides those
    starting with an ``ignore`` prefix (the classifier's tensors may be missing or of another shape:
    they are not loaded)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling, zip and weights_only errors are one user error
        raise EifError(f"model.weights: cannot read {path} as a torch state dict ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EifError(f"model.weights: {path} is not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(ignore) or not ignore}
    own = net.state_dict()
    wanted = [k for k in own if keep(k)]
    missing = [k for k in wanted if k not in state]
    shapes = [k for k in wanted if k in state and state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    if missing or shapes or unexpected:
        raise EifError(
            f"model.weights: {path} does not fit the architecture: {len(missing)} trunk tensors missing "
            f"({', '.join(missing[:3])}), {len(shapes)} of another shape ({', '.join(shapes[:3])}), "
            f"{len(unexpected)} unknown ({', '.join(unexpected[:3])})"
        )
    net.load_state_dict({k: state[k] for k in wanted}, strict=False)


class TorchvisionTrunk(ArchTrunk):
    """``model=torchvision``: ``arch`` (a torchvision classification model, e.g. ``resnet18``) as the
    trunk; ``weights`` is a torchvision weights name or a local state dict file (module doc)."""

    provider: ClassVar[str] = "torchvision classification"
    name: str = setting("torchvision", unkeyed=DISPLAY)

    @classmethod
    def arch_names(cls) -> list[str]:
        return tvm.list_models(module=tvm)

    def weights_file(self) -> str | None:
        return None if self.weights is None or self._weights_enum() is not None else self.weights

    def _weights_enum(self) -> Any:
        """The torchvision weights the name ``weights`` stands for, or None (a file, or no weights)."""
        members = tvm.get_model_weights(self.arch).__members__
        return members.get(self.weights) if self.weights else None

    def _network(self) -> nn.Module:
        with warnings.catch_warnings():  # GoogLeNet and Inception warn about their default init
            warnings.simplefilter("ignore", FutureWarning)
            return tvm.get_model(self.arch, weights=None)

    def weights_problem(self) -> str | None:
        if self.weights is None:
            return None
        enum = self._weights_enum()
        if enum is None:
            if Path(self.weights).is_file():
                try:  # load it once now: a file that does not fit fails before anything is computed
                    self._trunk(pretrained=True)
                except EifError as err:
                    return str(err)
                return None
            names = ", ".join(tvm.get_model_weights(self.arch).__members__)
            return (
                f"model.weights: {self.weights!r} is neither a weights name of {self.arch} ({names}) nor "
                "a file"
            )
        file = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
        if os.path.isfile(file):
            return None
        return (
            f"model.weights={self.weights} needs {file} (download {enum.url} there; TORCH_HOME sets the "
            "cache directory), or give a local file (model.weights=<path.pth>), or model.weights=null "
            "(random init)"
        )

    def native_feature_dim(self, in_channels: int) -> int:
        return probe_feature_dim(lambda: conv_trunk(self._network(), self.arch), self.arch)

    def _trunk(self, pretrained: bool) -> nn.Sequential:
        """The convolutional part, with the ``weights`` loaded when ``pretrained``."""
        net = self._network()
        trunk = conv_trunk(net, self.arch)
        if not pretrained:
            return trunk
        enum = self._weights_enum()
        if enum is not None:
            try:
                net.load_state_dict(enum.get_state_dict(progress=False, check_hash=True))
            except Exception as err:  # noqa: BLE001 - download, hash and unpickling errors alike
                why = " ".join(str(err).split())[:200]
                raise EifError(f"model.weights={self.weights}: cannot load {enum.url} ({why})") from None
        else:
            kept = {id(p) for p in trunk.state_dict(keep_vars=True).values()}
            named = net.state_dict(keep_vars=True)
            load_weights_file(net, str(self.weights), lambda k: id(named[k]) in kept)
        return trunk

    def build(self, pretrained: bool | None = None) -> Embedder:
        trunk = self._trunk(self.pretrained if pretrained is None else pretrained)
        if self.in_channels != 3:
            replace_first_conv(trunk, self.in_channels)
        return Embedder(trunk, self.feature_dim, self.embedding_size)
