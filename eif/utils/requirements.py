"""The optional imports a job needs, checked before anything is computed, each failure one line naming
the fix.

faiss and timm are optional dependencies (extras ``cpu``/``gpu*`` and ``timm``), so without this check a
job would train for minutes and only then stop at its first kNN search. torchvision is a base
dependency, but a torchvision built for another torch fails on import with a long traceback ("operator
torchvision::nms does not exist"); :func:`torchvision_problem` turns it into one line. Nothing here imports
torch's stack at module level: the command line calls it before importing the pipeline.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from eif.utils.errors import EifError

# Stages that never search neighbours; every other stage runs faiss itself or reads an output that did.
NO_FAISS_STAGES = frozenset({"train", "embed", "retrain_features"})

FAISS_FIX = (
    "pip install 'eif[cpu]' (faiss-cpu), or on a GPU machine 'eif[gpu]' / 'eif[gpu-cu12]' matching "
    "torch's CUDA version (docs/gpu.md)"
)
TIMM_FIX = "pip install 'eif[timm]' (or pip install timm)"


def _import_problem(module: str) -> str | None:
    """None when ``module`` imports, else its error in one line."""
    try:
        importlib.import_module(module)  # optional dependencies: imported by name, on demand
    except Exception as err:  # noqa: BLE001 - a broken build raises anything (ImportError, RuntimeError, OSError)
        return " ".join(str(err).split())[:200] or type(err).__name__
    return None


def torchvision_problem() -> str | None:
    """None when torchvision imports with this torch, else the one-line message (mismatched builds)."""
    problem = _import_problem("torchvision")
    if problem is None:
        return None
    import importlib.metadata as md

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    return (
        f"torchvision cannot be imported ({problem}); torch {version('torch')} and torchvision "
        f"{version('torchvision')} must be a matching pair: pip install the torchvision release built for "
        "this torch (https://pytorch.org/get-started/previous-versions/), or re-run scripts/setup.sh"
    )


def needs_faiss(stages: Iterable[str]) -> bool:
    """Whether running ``stages`` (and what they read) searches neighbours with faiss."""
    return any(s not in NO_FAISS_STAGES for s in stages)


def check(stages: Iterable[str], model_target: str = "") -> None:
    """Every optional import the job needs: torchvision, faiss when a stage searches neighbours, timm for
    ``model=timm`` (``model_target`` is the model settings' ``_target_`` or class path)."""
    if (message := torchvision_problem()) is not None:
        raise EifError(message)
    if needs_faiss(stages) and (problem := _import_problem("faiss")) is not None:
        raise EifError(f"faiss is not importable ({problem}): {FAISS_FIX}")
    if ".timm." in f".{model_target}." and (problem := _import_problem("timm")) is not None:
        raise EifError(f"model=timm needs timm ({problem}): {TIMM_FIX}")


def check_job(job: object) -> None:
    """:func:`check` for a validated job (``eif.config.JobConfig``)."""
    model = type(job.model)  # type: ignore[attr-defined]
    check(job.stages, f"{model.__module__}.{model.__qualname__}")  # type: ignore[attr-defined]
