"""The SLURM launcher profiles, composed for real and turned into sbatch scripts by submitit itself.

Each test composes ``conf/`` with a profile (``hydra/launcher=slurm_gpu|slurm_cpu``, usually with
``local=example_cluster``), instantiates the launcher the profile names (hydra-submitit-launcher's
``SlurmLauncher``) and runs its ``launch``: the plugin maps the profile onto submitit's executor and
submitit validates every parameter. Only the last step, ``sbatch``, is left out: ``map_array`` is
intercepted, and the script comes from the executor's own builder, made the way submitit makes it for
a job array (what ``sbatch`` would receive).
submitit refuses to create a SLURM executor without ``srun`` on PATH, so an ``srun`` that is never
run is put there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from eif.config import load_job
from tests.conftest import ROOT

PROFILE_LINES = ["export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK"]
GPU_LINES = [*PROFILE_LINES, "export EIF_DEVICE=cuda"]


def _compose(overrides: list[str], hydra_config: bool = True) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


@pytest.fixture
def sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """``sbatch_script(overrides) -> str``: the batch script the profile submits for a 2-job sweep."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # only has to exist: submitit's cluster probe
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executors: list[submitit.AutoExecutor] = []

    def no_submission(self: submitit.AutoExecutor, fn: object, *iterables: object) -> list:
        executors.append(self)  # the executor exactly as the plugin configured it; nothing is submitted
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", no_submission)

    def build(overrides: list[str]) -> str:
        cfg = _compose([*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
        launcher = instantiate(cfg.hydra.launcher)
        launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
        assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == []
        slurm = executors.pop()._executor
        assert slurm.max_num_timeout == launcher.params["max_num_timeout"]
        # what submitit's SlurmExecutor does for a job array: a copy of the executor with map_count set
        array = type(slurm)(slurm.folder, slurm.max_num_timeout)
        array.update_parameters(**slurm.parameters)
        array.parameters["map_count"] = 2
        return array._make_submission_file_text(array._submitit_command_str, "uid")

    return build


def _setup_lines(script: str) -> list[str]:
    lines = script.splitlines()
    return lines[lines.index("# setup") + 1 : lines.index("# command") - 1]


def test_gpu_profile_binds_cpus_requests_a_gpu_and_runs_on_cuda(sbatch_script) -> None:  # noqa: ANN001
    script = sbatch_script(["local=example_cluster"])
    flags = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    for flag in (
        "--cpus-per-task=8",
        "--gpus-per-node=1",
        "--ntasks-per-node=1",
        "--mem=64GB",
        "--time=720",
        "--signal=USR2@180",
        "--requeue",
        "--account=my_lab",
        "--partition=gpu",
        "--array=0-1%2",
    ):
        assert f"#SBATCH {flag}" in flags, (flag, flags)
    assert "#SBATCH --wckey=''" in flags and not any("--wckey=submitit" in f for f in flags)
    assert not any(f.startswith("#SBATCH --gres") for f in flags)
    # the profile's lines first, then the cluster's; all before the srun line
    assert _setup_lines(script) == [
        *GPU_LINES,
        "source $HOME/eif/.venv/bin/activate",
        "export WANDB_MODE=offline",
    ]
    assert script.index("export SRUN_CPUS_PER_TASK") < script.index("\nsrun ")
    # the lines do what they say in a shell that has the job's SLURM_CPUS_PER_TASK
    env = {"PATH": os.environ["PATH"], "SLURM_CPUS_PER_TASK": "8"}
    out = subprocess.run(
        ["bash", "-c", "; ".join([*GPU_LINES, 'echo "$SRUN_CPUS_PER_TASK $EIF_DEVICE"'])],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert out.split() == ["8", "cuda"]


def test_a_job_under_the_gpu_profile_gets_device_cuda(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the job composes after the batch script exported EIF_DEVICE=cuda (and without it)."""
    base = ["local=example_cluster", f"paths.output_dir={tmp_path}", "logger=none"]
    monkeypatch.delenv("EIF_DEVICE", raising=False)
    assert load_job(_compose(base, hydra_config=False)).device == "auto"
    monkeypatch.setenv("EIF_DEVICE", "cuda")
    assert load_job(_compose(base, hydra_config=False)).device == "cuda"
    assert load_job(_compose([*base, "device=cuda:1"], hydra_config=False)).device == "cuda:1"


def test_gres_sites_and_an_enforced_wckey(sbatch_script) -> None:  # noqa: ANN001
    script = sbatch_script(
        ["local=example_cluster", "cluster.gres=gpu:1", "cluster.gpus_per_node=null", "cluster.wckey=proj42"]
    )
    flags = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:1" in flags
    assert not any(f.startswith("#SBATCH --gpus-per-node") for f in flags)
    assert [f for f in flags if "--wckey" in f] == ["#SBATCH --wckey=proj42"]


def test_cpu_profile_binds_cpus_and_leaves_the_device_alone(sbatch_script) -> None:  # noqa: ANN001
    script = sbatch_script(["local=example_cluster", "hydra/launcher=slurm_cpu"])
    flags = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert "#SBATCH --cpus-per-task=4" in flags and "#SBATCH --partition=cpu" in flags
    assert not any("--gpus" in f or "--gres" in f for f in flags)
    assert "#SBATCH --wckey=''" in flags
    assert _setup_lines(script)[0] == PROFILE_LINES[0] and "EIF_DEVICE" not in script


def test_gpu_profile_without_a_cluster_file(sbatch_script) -> None:  # noqa: ANN001
    script = sbatch_script(["hydra/launcher=slurm_gpu"])
    assert _setup_lines(script) == GPU_LINES
    assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --cpus-per-task=8" in script
    assert "--account" not in script and "#SBATCH --wckey=''" in script
