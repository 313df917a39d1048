"""Shared test helpers: compose the real Hydra config, shrunk to seconds on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("EIF_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

# A run that trains for real on Fashion-MNIST in a few seconds: 60 images per class (300 train,
# 300 test), 2 epochs (1 warm-up), no logger.
TINY = [
    "dataset.max_per_class=60",
    "train.epochs=2",
    "train.warmup_epochs=1",
    "logger=none",
    "device=cpu",
]


def compose_cfg(tmp_path: Path, overrides: list[str] | None = None, tiny: bool = True) -> DictConfig:
    """The real config with test overrides; outputs and the store under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=(TINY if tiny else []) + list(overrides or []))
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.store_dir = str(tmp_path / "store")
    return cfg


def launch(
    args: list[str],
    tmp_path: Path,
    run_name: str = "run",
    timeout: float = 600,
    env: dict[str, str] | None = None,
    check: bool = False,
    tiny: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``launch.py`` in a subprocess with the store and run dir under ``tmp_path``; ``tiny`` adds
    the Fashion-MNIST shrinking overrides (other data sets take only ``logger=none device=cpu``)."""
    cmd = [
        sys.executable,
        str(ROOT / "launch.py"),
        *(TINY if tiny else ["logger=none", "device=cpu"]),
        f"paths.store_dir={tmp_path / 'store'}",
        f"hydra.run.dir={tmp_path / run_name}",
        *args,
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=tmp_path)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def fmnist_available() -> None:
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (run scripts/setup.sh)")
