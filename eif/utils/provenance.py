"""What produced a result: library versions, git commit, host."""

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


def provenance() -> dict[str, object]:
    return {"git_commit": git_commit(), "versions": library_versions(), "host": socket.gethostname()}
