"""Optional imports a job needs are checked before anything is computed: a missing faiss or a
torchvision that does not match torch is one ``error:`` line naming the fix, and nothing is trained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shadow(tmp_path: Path, module: str, error: str) -> Path:
    """A directory holding a package ``module`` that fails on import with ``error`` (first on the path,
    it hides the installed one)."""
    d = tmp_path / "shadow"
    (d / module).mkdir(parents=True)
    (d / module / "__init__.py").write_text(f"raise {error}\n")
    return d


@pytest.mark.parametrize(
    ("module", "error", "expected"),
    [
        (
            "faiss",
            'ImportError("No module named faiss")',
            "error: faiss is not importable (No module named faiss)",
        ),
        (
            "torchvision",
            'RuntimeError("operator torchvision::nms does not exist")',
            "error: torchvision cannot be imported (operator torchvision::nms does not exist); torch ",
        ),
    ],
)
def test_missing_or_broken_import_is_one_line_before_training(tmp_path, module, error, expected):
    shadow = _shadow(tmp_path, module, error)
    env = os.environ | {"PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}", "WANDB_MODE": "disabled"}
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "logger=none",
            "device=cpu",
            "stages=[train,evaluate]",
            f"paths.store_dir={tmp_path / 'store'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(expected), res.stderr
    assert "pip install" in res.stderr
    assert not (tmp_path / "store" / "train").exists()


def test_stages_without_neighbour_search_do_not_need_faiss():
    from eif.utils.requirements import needs_faiss

    assert not needs_faiss(["train", "embed", "retrain_features"])
    assert needs_faiss(["train", "evaluate"]) and needs_faiss(["report"])
