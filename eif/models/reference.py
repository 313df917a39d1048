"""Load the reference code's released checkpoints into our :class:`Embedder` and loss proxies.

The reference saves ``DataParallel(Sequential(trunk, Linear(2048 -> 512))).state_dict()``: keys
``module.0.base.<torchvision ResNet-50 key>`` (including the unused ``fc``) and ``module.1.weight``,
``module.1.bias``; its max pool and LayerNorm carry no parameters. The proxies are saved separately
as ``{"proxies": tensor}`` (``proxy.pth``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch

from eif.losses.base import MetricLoss, ProxyLoss
from eif.models.embedder import Embedder
from eif.utils.errors import EifError

_TRUNK_PREFIX = "0.base."
_HEAD_PREFIX = "1."
_UNUSED_PREFIX = "0.base.fc."
_OPTIONAL_SUFFIX = "num_batches_tracked"


def _load(path: str | os.PathLike, what: str) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise EifError(f"reference {what} not found: {path}") from exc
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise EifError(f"cannot read reference {what} {path}: {type(exc).__name__}: {exc}") from exc


def convert_reference_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference ``module.0.base.*`` / ``module.1.*`` keys -> our ``trunk.*`` / ``head.*`` keys.

    The ``module.`` prefix (DataParallel) is optional; ``module.0.base.fc.*`` is dropped. Any other key
    is an :class:`EifError`.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if k.startswith(_UNUSED_PREFIX):
            continue
        if k.startswith(_TRUNK_PREFIX):
            out["trunk." + k[len(_TRUNK_PREFIX) :]] = value
        elif k.startswith(_HEAD_PREFIX):
            out["head." + k[len(_HEAD_PREFIX) :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise EifError(
            f"not a reference checkpoint: unexpected keys {unknown[:3]} (expected module.0.base.* "
            "and module.1.*)"
        )
    return out


def load_reference_model(model: Embedder, path: str | os.PathLike) -> None:
    """Load the reference checkpoint at ``path`` into ``model`` in place (ResNet-50 trunk and head)."""
    state = _load(path, "checkpoint")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EifError(f"reference checkpoint {path} is not a state_dict of tensors")
    converted = convert_reference_state_dict(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in converted if k not in expected]
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise EifError(
            f"reference checkpoint {path} does not match the model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shapes {wrong_shape[:3]}"
        )
    model.load_state_dict(converted, strict=False)


def load_reference_proxies(proxies: torch.nn.Parameter, path: str | os.PathLike) -> None:
    """Copy the ``{"proxies": (C*K, E)}`` tensor of a reference ``proxy.pth`` into ``proxies`` in place."""
    obj = _load(path, "proxy file")
    value = obj.get("proxies") if isinstance(obj, Mapping) else None
    if not isinstance(value, torch.Tensor):
        raise EifError(f"reference proxy file {path} must hold {{'proxies': tensor}}")
    if value.shape != proxies.shape:
        raise EifError(
            f"reference proxies in {path} have shape {tuple(value.shape)}, the loss expects "
            f"{tuple(proxies.shape)} (num_classes * centers_per_class, embedding_size)"
        )
    with torch.no_grad():
        proxies.copy_(value.detach())


def load_reference_checkpoint(
    model_path: str | os.PathLike,
    proxy_path: str | os.PathLike | None,
    model: Embedder,
    loss: MetricLoss | None = None,
) -> None:
    """Load a reference model checkpoint into ``model`` and its ``proxy.pth`` into ``loss.proxies``."""
    if (loss is None) != (proxy_path is None):
        raise EifError("give both the loss and the reference proxy.pth, or neither")
    if loss is not None and not isinstance(loss, ProxyLoss):
        raise EifError(
            f"the reference's proxy.pth holds proxies, but loss {type(loss).__name__} has none: "
            "use loss=proxynca_pp or loss=softtriple with a reference checkpoint"
        )
    load_reference_model(model, model_path)
    if loss is not None and proxy_path is not None:
        load_reference_proxies(loss.proxies, proxy_path)
