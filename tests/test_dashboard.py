"""``eif dashboard``: offline, the W&B report spec of a real (tiny) ``sweeps/table1_fmnist`` sweep
validates against wandb-workspaces' models, has a Table 1 grid per (data set, loss, noise) group, and
names every key the jobs logged; user errors are one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eif.logging.run_logger import LOGGED_KEYS
from eif.tables.table1 import summary_keys

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("wandb_workspaces", reason="wandb-workspaces is not installed (pip install -e '.[dev]')")


def _eif(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 900
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    return env | {"WANDB_MODE": "offline", "EIF_ROOT": str(tmp_path), "NETRC": str(tmp_path / "no-netrc")}


def test_dashboard_errors_are_one_line(tmp_path):
    env = _offline_env(tmp_path)
    for args, expected in (
        (["dashboard", str(tmp_path / "nosuch")], "is not a directory"),
        (["dashboard", str(tmp_path)], "no job under"),
    ):
        res = _eif(args, env, tmp_path, timeout=120)
        assert res.returncode == 2 and res.stdout == ""
        assert (
            res.stderr.count("\n") == 1
            and res.stderr.startswith("error: dashboard: ")
            and expected in res.stderr
        )
    assert not (tmp_path / "dashboard.json").exists()


@pytest.mark.slow
def test_dashboard_spec_of_a_table1_sweep(tmp_path):
    """Two jobs of sweeps/table1_fmnist (noise none and p05 = two groups), shrunk to seconds."""
    from wandb_workspaces.reports.v2 import internal

    env = _offline_env(tmp_path)
    sweep = tmp_path / "sweep"
    res = _eif(
        [
            "-m",
            "--config-name",
            "table1_fmnist",
            "seed=0",
            "noise=none,p05",
            "dataset.max_per_class=60",
            "train.epochs=2",
            "train.warmup_epochs=1",
            "device=cpu",
            "methods.if.solver.scale=auto",
            # a 2-epoch model's H is indefinite below its curvature
            "methods.if_converged.solver.damping=100",
            "methods.if_converged_low.solver.damping=100",
            f"hydra.sweep.dir={sweep}",
        ],
        env,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    res = _eif(["dashboard", str(sweep)], env, tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    spec_path = sweep / "dashboard.json"
    assert res.stdout.count("\n") == 1 and str(spec_path) in res.stdout and "--publish" in res.stdout
    text = spec_path.read_text()
    model = internal.ReportViewspec.model_validate_json(text)  # wandb-workspaces' own model
    blocks = model.spec.blocks
    headings = ["".join(c.text for c in b.children) for b in blocks if b.type == "heading"]
    groups = {"fashion_mnist-proxynca_pp-none", "fashion_mnist-proxynca_pp-p05"}
    assert {h.removeprefix("Table 1: ") for h in headings if h.startswith("Table 1: ")} == groups
    assert {"Robustness", "Runtime"} <= set(headings)
    spec = json.loads(text)
    grids = [b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    for group in groups:  # each group's grid selects its runs and shows Table 1 with p-values
        (grid,) = [g for g in grids if g["metadata"]["runSets"][0]["name"] == group]
        grid_text = json.dumps(grid)
        assert group in json.dumps(grid["metadata"]["runSets"][0]["filters"])
        assert "table1/stats" in grid_text and "/pvalue" in grid_text and "/improvement" in grid_text
    # every key the jobs logged is named; the Table 1 keys also as the stats stage derives them
    for job in ("0", "1"):
        logged = json.loads((sweep / job / "wandb" / LOGGED_KEYS).read_text())
        names = [k for part in ("summary", "tables", "history", "images") for k in logged[part]]
        assert "table1/robustness_comparisons" in names and "lds/table" not in names
        missing = [k for k in names if not re.search(r'"(summary:)?' + re.escape(k) + '"', text)]
        assert not missing, f"keys logged by job {job} but not in the spec: {missing}"
        rows = json.loads((sweep / job / "stats.json").read_text())["rows"]
        assert set(summary_keys(rows)) <= set(logged["summary"])
