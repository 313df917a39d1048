"""A config error is one line that names the fix, and leaves no run dir behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, launch


def test_warmup_longer_than_training_names_the_fix_and_leaves_no_run_dir(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    proc = launch(["train.epochs=1", "train.warmup_epochs=5", "stages=[train]"], tmp_path, tiny=False)
    seconds = time.perf_counter() - t0
    print(f"config error after {seconds:.1f} s")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: train.warmup_epochs=5 must be smaller than train.epochs=1 (warm-up freezes the trunk, so the "
        "trunk would never train): add train.warmup_epochs=0 for no warm-up"
    )
    assert not (tmp_path / "run").exists()  # Hydra made it (configs, eif.log) before the check failed
    proc = launch(["train.epochs=3", "train.warmup_epochs=3", "stages=[train]"], tmp_path, tiny=False)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "add train.warmup_epochs=0 for no warm-up (or up to 2)"
    )
    assert not (tmp_path / "run").exists()


def test_a_failed_run_keeps_its_run_dir_when_it_wrote_more_than_hydra(tmp_path: Path) -> None:
    """Only a run dir holding nothing but Hydra's own files is removed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine\n")
    proc = launch(["train.epochs=1", "train.warmup_epochs=5", "stages=[train]"], tmp_path, tiny=False)
    assert proc.returncode == 2
    assert (run / "notes.txt").read_text() == "mine\n" and (run / "eif.log").is_file()


def test_auto_warmup_is_the_reference_five_epochs_or_fewer_for_short_runs(tmp_path: Path) -> None:
    """``train.warmup_epochs: auto`` (the YAML default) is 5 epochs, capped at epochs - 1: a 1-epoch run
    trains its trunk, and the default job's recipe (40 epochs, 5 warm-up) is unchanged."""
    from eif.config import load_job
    from tests.conftest import compose_cfg

    picked = {
        e: load_job(compose_cfg(tmp_path, [f"train.epochs={e}"], tiny=False)).train.warmup_epochs
        for e in (1, 2, 6, 40)
    }
    assert picked == {1: 0, 2: 1, 6: 5, 40: 5}


def test_a_missing_local_profile_is_one_line_naming_the_ones_that_exist(tmp_path: Path) -> None:
    """``-m local=<name>`` without ``conf/local/<name>.yaml`` must not launch jobs on this machine."""
    store = f"paths.store_dir={tmp_path / 'store'}"
    cmd = [sys.executable, str(ROOT / "launch.py"), "-m", "local=nosuch", store]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.strip() == (
        "error: In 'config': Could not find 'local/nosuch' "
        "Available options in 'local': default example_cluster"
    )
    assert not (tmp_path / "store").exists()
