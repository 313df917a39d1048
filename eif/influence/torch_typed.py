# pyright: strict
"""Typed doors to the few torch functions whose stubs are untyped, so the influence code type-checks
in strict mode: ``torch.linalg`` is bound at import from C builtins (``_add_docstr``), and
``torch.from_numpy``, ``Tensor.norm``, ``.unique`` and ``.tolist`` leave parameters or results
unannotated. Each wrapper calls the same torch function with the same arguments (results
bit-identical); the one ``pyright: ignore`` per call is the loose stub, nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt
import torch


def eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (..., n) ascending and eigenvectors (..., n, n) of a symmetric a (..., n, n)."""
    values, vectors = torch.linalg.eigh(a)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return values, vectors  # pyright: ignore[reportUnknownVariableType]


def eigvalsh(a: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (..., n) ascending of a symmetric a (..., n, n)."""
    return torch.linalg.eigvalsh(a)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


def solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """X with a X = b: a (n, n), b (n, k) -> (n, k)."""
    return torch.linalg.solve(a, b)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


def cholesky_ex(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L lower triangular with a = L L^T, info: 0 on success, else the order of the failing minor)."""
    factor, info = torch.linalg.cholesky_ex(a)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return factor, info  # pyright: ignore[reportUnknownVariableType]


def norm(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """``x.norm(dim=dim, keepdim=keepdim)``: the 2-norm over ``dim`` (Frobenius over all when None)."""
    if dim is None:
        out = x.norm()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    else:
        out = x.norm(dim=dim, keepdim=keepdim)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return out  # pyright: ignore[reportUnknownVariableType]


def unique(x: torch.Tensor) -> torch.Tensor:
    """``x.unique()``: the sorted distinct values of x (flattened)."""
    return x.unique()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


def floats(x: torch.Tensor) -> list[float]:
    """``x.tolist()`` of a 1-d floating tensor: its values as Python floats."""
    return x.tolist()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


def from_numpy(a: npt.NDArray[Any]) -> torch.Tensor:
    """``torch.from_numpy(a)``: a tensor sharing a's memory."""
    return torch.from_numpy(a)  # pyright: ignore[reportUnknownMemberType]
