"""What produced a result: library versions, the faiss build, torch's CUDA stack, git commit, host."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "faiss-cpu",
    "faiss-gpu",
    "faiss-gpu-cu12",
    "faiss-gpu-cu12-cuvs",
    "faiss-gpu-cu13-cuvs",
    "pytorch-metric-learning",
    "hydra-core",
    "omegaconf",
    "wandb",
    "cleanlab",
    "submitit",
)


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the project checkout (with ``+dirty`` if it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def faiss_distributions() -> list[str]:
    """The installed distributions that provide the ``faiss`` module, e.g. ``["faiss-gpu-cu13-cuvs"]``
    (more than one means they overwrite each other's files)."""
    return sorted(set(metadata.packages_distributions().get("faiss", [])))


def cuda_stack() -> dict[str, object]:
    """torch's CUDA and cuDNN versions (None on a CPU build) and, once this process has used CUDA, the
    current GPU's name (asking earlier would create a CUDA context just for the record)."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_initialized() else None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch_cuda": torch.version.cuda, "cudnn": cudnn, "gpu": gpu}


def provenance() -> dict[str, object]:
    return {
        "git_commit": git_commit(),
        "versions": library_versions(),
        "faiss": faiss_distributions(),
        "cuda": cuda_stack(),
        "host": socket.gethostname(),
    }
