"""Sweep aggregation: partial sweeps give empty cells, and the Table 1 sweep expands to its jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from eif.tables.__main__ import main
from eif.tables.sweep import expected_jobs
from eif.tables.table1 import aggregate, compare
from eif.utils.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
PAPER_MODELS = [
    "cub-proxynca_pp-0",
    "cars-proxynca_pp-3",
    "inshop-proxynca_pp-4",
    "cub-softtriple-3",
    "cars-softtriple-4",
    "inshop-softtriple-3",
]


def _job(sweep: Path, num: int, model: str, shift: float) -> None:
    dataset, loss, seed = model.split("-")
    rng = np.random.default_rng(num)
    d_if = rng.normal(0, 0.01, 100)
    rows = compare("pairs", d_if + shift + rng.normal(0, 0.01, 100), d_if, [30, 100]) + compare(
        "groups", d_if[:12] + shift, d_if[:12], [10, 15]
    )
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"table1_model={model}"]), job / ".hydra" / "overrides.yaml")
    write_json(
        job / "stats.json",
        {"rows": rows, "job": {"dataset": dataset, "loss": loss, "seed": int(seed), "noise": "none"}},
    )


def _sweep(tmp_path: Path, done: list[int]) -> Path:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    OmegaConf.save(
        OmegaConf.create(
            {
                "hydra": {
                    "sweeper": {"params": {"table1_model": ",".join(PAPER_MODELS)}},
                    "overrides": {"task": ["logger=none"]},
                },
                "stats": {"pair_sizes": [30, 100], "group_sizes": [10, 15]},
            }
        ),
        sweep / "multirun.yaml",
    )
    for num in done:
        _job(sweep, num, PAPER_MODELS[num], shift=0.02)
    return sweep


def test_expected_jobs_expand_the_sweep_grid(tmp_path):
    sweep = _sweep(tmp_path, [])
    jobs = expected_jobs(sweep)
    assert [j["table1_model"] for j in jobs] == PAPER_MODELS
    assert all(set(j) == {"table1_model"} for j in jobs)  # the fixed logger=none is not a sweep axis


def test_a_sweep_that_lost_jobs_still_aggregates(tmp_path):
    sweep = _sweep(tmp_path, [0, 2, 4])  # cub/proxynca, inshop/proxynca, cars/softtriple finished
    (sweep / "1" / ".hydra").mkdir(parents=True)  # started and crashed: no stats.json
    OmegaConf.save(
        OmegaConf.create(["table1_model=cars-proxynca_pp-3"]), sweep / "1" / ".hydra" / "overrides.yaml"
    )
    table = aggregate(sweep)
    assert len(table) == 6 * 4
    missing = table[table.status == "missing"]
    assert sorted(set(zip(missing.dataset, missing.loss, missing.seed))) == [
        ("cars", "proxynca_pp", 3),
        ("cub", "softtriple", 3),
        ("inshop", "softtriple", 3),
    ]
    assert set(missing[missing.dataset == "cars"].job) == {"1"}
    csv = pd.read_csv(sweep / "table1.csv")
    assert len(csv) == 24 and csv.loc[csv.status == "missing", "pvalue"].isna().all()
    md = (sweep / "table1.md").read_text()
    assert "## Individual confusion (proxynca_pp)" in md and "## Group confusion (softtriple)" in md
    # cub seed 0 groups: EIF wins all 10 groups -> 2^-10; cars (missing) cells are empty.
    group_line = next(line for line in md.splitlines() if line.startswith("| 10 |") and "9.77E-04" in line)
    cells = [c.strip() for c in group_line.strip("|").split("|")]
    assert cells[1:] == ["2.00E-02", "9.77E-04", "", "", "2.00E-02", "9.77E-04"]
    tex = (sweep / "table1.tex").read_text()
    assert "\\begin{tabular}" in tex and "CUB200 (seed 0)" in tex


def test_not_enough_confusions_shows_as_na(tmp_path):
    sweep = _sweep(tmp_path, [0])
    stats = sweep / "0" / "stats.json"
    record = pd.read_json(stats, typ="series")
    rows = compare("groups", np.ones(12) * 0.1, np.zeros(12), [10, 15, 20])
    write_json(stats, {"rows": rows, "job": dict(record["job"])})
    aggregate(sweep)
    line = next(line for line in (sweep / "table1.md").read_text().splitlines() if line.startswith("| 20 |"))
    assert line.split("|")[2].strip() == "n/a"


def test_cli_on_an_empty_sweep_writes_empty_tables(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2  # neither results nor a sweep: most likely a wrong path
    assert "holds no job results" in capsys.readouterr().out
    write_text(tmp_path / "multirun.yaml", "hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    assert main([str(tmp_path)]) == 0  # a sweep whose jobs have not finished: empty cells
    assert (tmp_path / "table1.csv").exists() and (tmp_path / "table1.md").exists()
    assert main([str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_table1_sweep_launches_six_jobs_and_aggregates(tmp_path):
    """The documented command composes, expands to the paper's six models and aggregates at the end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "launch.py",
        "-m",
        "--config-dir",
        "sweeps",
        "--config-name",
        "table1",
        "stages=[]",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        f"paths.store_dir={tmp_path / 'store'}",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for model in PAPER_MODELS:
        assert f"table1_model={model}" in res.stdout + res.stderr
    assert len(list(sweep.glob("*/.hydra/overrides.yaml"))) == 6
    table = pd.read_csv(sweep / "table1.csv")
    assert set(table.status) == {"missing"}  # no job ran the stats stage
    assert len(table.drop_duplicates(["dataset", "loss", "seed"])) == 6
    assert len(table) == 6 * 10  # five K and five M per job
