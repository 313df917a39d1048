"""Device selection: CUDA when present and asked for, CPU otherwise."""

from __future__ import annotations

import torch

from eif.utils.errors import EifError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA if available; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EifError(f"device={name} was requested but no CUDA GPU is available; use device=auto or cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise EifError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)
