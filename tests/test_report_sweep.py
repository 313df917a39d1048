"""Table 2 / Table 3 aggregation over a sweep dir, with a job that never ran (an empty cell)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from eif.tables.mislabel import aggregate
from eif.utils.io import write_json, write_text


def _job(
    sweep: Path,
    name: str,
    dataset: str,
    noise: str,
    seed: int,
    strict: float,
    second: float,
    det: float,
    rec: float,
) -> None:
    job = sweep / name
    cfg = {
        "dataset": {"name": dataset},
        "loss": {"name": "proxynca_pp"},
        "noise": {"name": noise},
        "seed": seed,
    }
    write_text(job / ".hydra" / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg)))
    write_text(job / ".hydra" / "overrides.yaml", f"- dataset={dataset}\n- noise={noise}\n- seed={seed}\n")
    write_json(
        job / "artifacts" / "relabel" / "relabel.json",
        {"accuracy": {"flips_in_set": 10, "strict": strict, "second_label": second}},
    )
    write_text(
        job / "artifacts" / "relabel" / "runtime.csv",
        f"method,detection_s,recommendation_s\nEIF,{det},{rec}\nIF,{det * 2},\n",
    )
    write_text(job / "report.html", "<html></html>")


def test_tables_with_a_missing_job(tmp_path: Path) -> None:
    _job(tmp_path, "0", "cub", "p10", 0, 0.8, 0.9, 10.0, 1.0)
    _job(tmp_path, "1", "cub", "p10", 1, 0.6, 0.7, 14.0, 3.0)
    write_text(
        tmp_path / "multirun.yaml",
        OmegaConf.to_yaml(
            OmegaConf.create(
                {
                    "hydra": {
                        "sweeper": {"params": {"dataset": "cub,cars", "noise": "p10", "seed": "0,1"}},
                        "overrides": {"task": []},
                    }
                }
            )
        ),
    )
    long = aggregate(tmp_path)
    assert (long.status == "missing").sum() == 2  # cars, seeds 0 and 1
    t2 = pd.read_csv(tmp_path / "table2.csv", keep_default_na=False)
    row = t2.iloc[0]
    assert row.cub == "80.00 ± 14.14" and row.cars == ""  # mean +- sample std of 90 and 70
    t2s = pd.read_csv(tmp_path / "table2_strict.csv", keep_default_na=False)
    assert t2s.iloc[0].cub == "70.00 ± 14.14"
    t3 = pd.read_csv(tmp_path / "table3.csv", keep_default_na=False).set_index(["dataset", "method"])
    assert t3.loc[("cub", "EIF"), "detection_s"] == "12.00 ± 2.83"
    assert t3.loc[("cub", "IF"), "recommendation_s"] == ""
    assert t3.loc[("cars", "EIF"), "detection_s"] == ""
    index = (tmp_path / "index.html").read_text()
    assert 'href="0/report.html"' in index and 'href="1/report.html"' in index and "missing" in index
