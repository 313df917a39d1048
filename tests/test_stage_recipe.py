"""docs/architecture.md, "Stages": adding a stage is one module plus one YAML. This test follows that
recipe for a throw-away stage in a package of its own (under tmp_path, made known to eif once by its
``eif.stages`` entry point) and runs it through the real command line: Hydra composes its group with
no line in conf/config.yaml, the typo check knows its name, the pipeline plans, runs and stores it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import ROOT, launch

MODULE = '''"""Stage ``count``: training images per class (a throw-away stage for the recipe test)."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from eif.settings import Settings
from eif.stages.base import Run, Stage


class CountConfig(Settings):
    label: str


class CountSettings(Settings):
    data: str
    count: CountConfig


def _settings(job: Any, env: Any) -> CountSettings:
    return CountSettings(data=env.fingerprints("train")["train"], count=job.count)


def _compute(s: CountSettings, run: Run, out: Path) -> None:
    counts = np.bincount(run.data().train.labels).tolist()
    (out / "counts.json").write_text(json.dumps({"label": s.count.label, "counts": counts}))


STAGE = Stage(name="count", settings=_settings, compute=_compute, config=("count", CountConfig))
'''


def _package(site: Path) -> None:
    """The recipe: the module and its YAML, in a package that names itself once as a stage package."""
    pkg = site / "eif_recipe_stages"
    (pkg / "conf" / "count").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "count.py").write_text(MODULE)
    (pkg / "conf" / "count" / "default.yaml").write_text("# what the counts are called\nlabel: per class\n")
    info = site / "eif_recipe_stages-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: eif-recipe-stages\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[eif.stages]\nrecipe = eif_recipe_stages\n")


def test_a_new_stage_is_one_module_and_one_yaml(tmp_path: Path, fmnist_available: None) -> None:
    site = tmp_path / "site"
    _package(site)
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}

    shown = launch(["stages=[count]", "--cfg", "job"], tmp_path / "cfg", env=env, check=True)
    assert "count:\n  label: per class\n" in shown.stdout

    typo = launch(["stages=[cout]"], tmp_path / "typo", env=env)
    assert typo.returncode == 2
    assert "unknown stage 'cout' (did you mean 'count'?)" in typo.stderr

    launch(["stages=[count]", "count.label=images"], tmp_path / "job", env=env, check=True)
    run = json.loads((tmp_path / "job" / "run" / "run.json").read_text())
    assert list(run["keys"]) == ["count"]
    result = json.loads((Path(run["artifacts"]["count"]) / "counts.json").read_text())
    assert result["label"] == "images"
    # 60 training images per class (conftest.TINY): the stage read the job's data
    assert set(result["counts"]) == {60} and len(result["counts"]) >= 2

    # the stage's settings are keyed: another label is another artifact
    launch(["stages=[count]", "count.label=other"], tmp_path / "job2", env=env, check=True)
    run2 = json.loads((tmp_path / "job2" / "run" / "run.json").read_text())
    assert run2["keys"]["count"] != run["keys"]["count"]
