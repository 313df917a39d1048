"""Sweeps that finish: a model without confusions is a result (a note, exit 0, the later stages skipped),
and in a ``-m`` sweep one failing job neither stops nor hides the others; the sweep ends with one line
per job and exits non-zero when any failed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eif.api import Result
from eif.utils.errors import EifError
from eif.utils.io import read_json
from tests.conftest import ROOT
from tests.fixtures import make_features

STAGES = "stages=[train,evaluate,embed,mine,influence,retrain,stats,lds,report]"


def make_separable(root: Path) -> Path:
    """``root/features.npz`` whose every sample sits within 1e-3 of its class centre (centres about 2
    apart): whatever head trains, each test sample's 1-NN is a sample of its own class."""
    arrays = make_features(root, dim=8, train_classes=4, test_classes=3, per_class=6)
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_features"], arrays[f"{split}_labels"]
        centres = {c: x[y == c].mean(axis=0) for c in np.unique(y)}
        arrays[f"{split}_features"] = np.stack([centres[c] for c in y]) + 1e-3 * rng.normal(size=x.shape)
        arrays[f"{split}_features"] = arrays[f"{split}_features"].astype(np.float32)
    np.savez(root / "features.npz", **arrays)
    return root / "features.npz"


# basic: Hydra's launcher, the jobs in turn in this process; local_parallel: submitit processes (~60 s)
@pytest.mark.parametrize("launcher", ["basic", pytest.param("local_parallel", marks=pytest.mark.slow)])
def test_a_sweep_runs_every_job_and_ends_with_a_summary(tmp_path: Path, launcher: str) -> None:
    """Job 0 reads a features file that does not exist (fails when the data is read), job 1 a data set its
    model separates perfectly (recall@1 = 1: nothing to attribute). Both run; the sweep prints one line
    per job and exits 1."""
    separable = make_separable(tmp_path / "sep")
    sweep = tmp_path / "sweep"
    t0 = time.perf_counter()
    cmd = [
        *(sys.executable, str(ROOT / "launch.py"), "-m", "logger=none", "device=cpu"),
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={sweep}",
        f"paths.store_dir={tmp_path / 'store'}",
        "dataset=features",
        f"dataset.path={tmp_path / 'nosuch.npz'},{separable}",
        STAGES,
        "train.epochs=2",
        "lds.subsets=4",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    print(f"-m sweep of 2 jobs ({launcher} launcher): {time.perf_counter() - t0:.1f} s")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith(f"sweep {sweep}: "))
    assert lines[head] == f"sweep {sweep}: 2 jobs, 1 failed"
    job0, job1 = lines[head + 1 : head + 3]
    missing = tmp_path / "nosuch.npz"
    assert job0 == (
        f"  job 0 (dataset.path={missing}): failed (exit 2): features: {missing} is not a file; "
        "set dataset.path to an .npz or .parquet file"
    )
    assert job1.startswith(f"  job 1 (dataset.path={separable}): ok"), job1
    assert job1.endswith(
        "ok, influence: the model has no pair or group confusions to attribute (skipped: influence, "
        "retrain, stats, lds)"
    ), job1

    # the job without confusions: mine's empty tables, the note in run.json, the report still rendered
    run = read_json(sweep / "1" / "run.json")
    assert run["skipped"] == {
        k: "influence: the model has no pair or group confusions to attribute"
        for k in ("influence", "retrain", "stats", "lds")
    }
    assert read_json(Path(run["artifacts"]["evaluate"]) / "metrics.json")["recall@1"] == 1.0
    mine = read_json(Path(run["artifacts"]["mine"]) / "mine.json")
    assert (mine["n_wrong"], mine["n_pairs"], mine["n_groups"]) == (0, 0, 0)
    assert (sweep / "1" / "report.html").is_file()
    with pytest.raises(EifError, match="no influence output: influence: the model has no pair or group"):
        Result(sweep / "1", run).influence()
    assert read_json(sweep / "0" / "outcome.json")["exit"] == 2
