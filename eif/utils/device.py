"""Device choice that cannot be silently wrong: ``device=cuda`` fails at once without a usable GPU.

``auto`` picks CUDA when torch can use a GPU, else the CPU, and says why; a GPU job should ask for
``device=cuda`` (the SLURM GPU profiles do), so a node whose driver is too old for torch's CUDA build
stops with one line instead of training on the CPU for days.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import torch

from eif.utils.errors import EifError


def driver_version() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (None when there is no nvidia-smi or it fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\d+(\.\d+)+", out)
    return match.group(0) if match else None


def cuda_problem() -> str:
    """Why torch cannot use a GPU here, with the versions that matter and the fix."""
    built = torch.version.cuda
    driver = driver_version()
    if built is None:
        return (
            f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build "
            "(scripts/setup.sh with EIF_TORCH=cu130 or cu126, see docs/gpu.md)"
        )
    if driver is None:
        cluster = shutil.which("sbatch") is not None  # GPU advice only where a GPU node could exist
        advice = ": run on a GPU node, e.g. with hydra/launcher=slurm_gpu" if cluster else ""
        return (
            f"torch {torch.__version__} is built for CUDA {built}, but no NVIDIA driver answers here "
            f"(no nvidia-smi){advice}"
        )
    return (
        f"torch {torch.__version__} is built for CUDA {built} and the NVIDIA driver is {driver}, but "
        "torch cannot use the GPU: the driver is probably too old for this CUDA version (CUDA 13 needs "
        "driver >= 580, CUDA 12 >= 525); install a torch build for an older CUDA (docs/gpu.md)"
    )


def resolve_device(name: str) -> tuple[torch.device, str]:
    """(device, why). ``auto``: CUDA if torch can use a GPU, else CPU; ``cuda[:N]`` without a usable
    GPU, or with N out of range, is one :class:`EifError` line."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), f"auto: CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}"
        return torch.device("cpu"), "auto: no usable CUDA GPU (" + cuda_problem().split(";")[0] + ")"
    if name == "cpu":
        return torch.device("cpu"), "device=cpu"
    if re.fullmatch(r"cuda(:\d+)?", name) is None:
        raise EifError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    if not torch.cuda.is_available():
        raise EifError(f"device={name}: {cuda_problem()}")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise EifError(f"device={name}: this node has {count} visible GPU(s) (CUDA_VISIBLE_DEVICES)")
    return device, f"device={name}: {torch.cuda.get_device_name(device)}"
