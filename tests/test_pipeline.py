"""End-to-end behaviour of the entry point: real training on Fashion-MNIST, caching, resumption,
and one-line errors for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from eif.pipeline import run_job
from eif.utils.io import CorruptFile, load_checked, load_torch, read_json
from tests.conftest import ROOT, TINY, compose_cfg, launch

pytestmark = pytest.mark.usefixtures("fmnist_available")


def _manifests(store: Path, stage: str) -> list[Path]:
    return sorted((store / stage).glob("*/MANIFEST.json"))


def test_train_evaluate_embed_then_reuse(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path)
    record = run_job(cfg)
    assert set(record["compute_seconds"]) == {"train", "evaluate", "embed"}

    metrics = read_json(Path(record["artifacts"]["evaluate"]) / "metrics.json")
    for k in ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r"):
        assert 0.0 <= metrics[k] <= 1.0, (k, metrics)
    # Recall@K is monotone in K, and a trained model beats chance (1/5 classes) at R@1.
    assert metrics["recall@1"] <= metrics["recall@2"] <= metrics["recall@4"] <= metrics["recall@8"]
    assert metrics["recall@1"] > 0.4

    history = read_json(Path(record["artifacts"]["train"]) / "history.json")
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in history)

    emb_dir = Path(record["artifacts"]["embed"])
    train, test = np.load(emb_dir / "train.npz"), np.load(emb_dir / "test.npz")
    assert train["features"].shape == (300, cfg.model.feature_dim)
    assert train["embeddings"].shape == (300, cfg.model.embedding_size)
    assert test["features"].shape[0] == 300
    assert set(np.unique(train["labels"])) == {0, 1, 2, 3, 4}
    assert set(np.unique(test["labels"])) == {5, 6, 7, 8, 9}
    # The cached embeddings are head(features): check against the saved head.
    ck = load_torch(Path(record["artifacts"]["train"]) / "model.pt")
    W, b = ck["model"]["head.weight"], ck["model"]["head.bias"]
    np.testing.assert_allclose(
        torch.from_numpy(train["features"]) @ W.T + b, train["embeddings"], rtol=1e-4, atol=1e-4
    )
    # The run dir holds the artifacts it used (hard links into the store) and its provenance.
    run_dir = tmp_path / "run"
    assert (run_dir / "artifacts" / "embed" / "train.npz").exists()
    assert read_json(run_dir / "run.json")["config"]["seed"] == 0

    # A second identical job reuses every stage; a sweep over a later-stage setting reuses train.
    again = run_job(compose_cfg(tmp_path))
    assert again["compute_seconds"] == {}
    other = run_job(compose_cfg(tmp_path, ["evaluate.recall_at=[1,3]"]))
    assert set(other["compute_seconds"]) == {"evaluate"}
    assert len(_manifests(tmp_path / "store", "train")) == 1


def _final_weights(store: Path) -> dict[str, torch.Tensor]:
    (manifest,) = _manifests(store, "train")
    return load_torch(manifest.parent / "model.pt")["model"]


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_bit_identical(tmp_path: Path) -> None:
    args = [
        "dataset.max_per_class=200",
        "train.epochs=3",
        "train.warmup_epochs=1",
        "train.checkpoint_every_batches=3",
        "stages=[train,evaluate]",
    ]
    clean = launch(args, tmp_path / "clean", check=True)
    assert clean.returncode == 0

    work = tmp_path / "killed"
    work.mkdir()
    cmd = [
        sys.executable,
        str(ROOT / "launch.py"),
        *TINY,
        *args,
        f"paths.store_dir={work / 'store'}",
        f"hydra.run.dir={work / 'run1'}",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=work,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = sorted((work / "store" / "train").glob("*.partial*/ckpt/*.ckpt"))
        if found:
            try:
                state = load_checked(found[-1])
            except (OSError, CorruptFile):  # rotated away meanwhile
                continue
            if state["epoch"] >= 1 and state["batch"] > 0:  # mid-epoch, after a full epoch
                ckpt = state
                break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt is not None
    assert not _manifests(work / "store", "train"), "a killed run must not look finished"

    resumed = launch(args, work, run_name="run2", check=True)
    assert "resuming training at epoch" in resumed.stdout + resumed.stderr
    a, b = _final_weights(tmp_path / "clean" / "store"), _final_weights(work / "store")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    m_clean = read_json(next((tmp_path / "clean" / "store" / "evaluate").glob("*/metrics.json")))
    m_resumed = read_json(next((work / "store" / "evaluate").glob("*/metrics.json")))
    assert m_clean == m_resumed

    # Everything is finished now: a third run computes nothing.
    third = launch(args, work, run_name="run3", check=True)
    assert read_json(work / "run3" / "run.json")["compute_seconds"] == {}
    assert third.returncode == 0


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _assert_nothing_half_written(store: Path) -> None:
    if not store.exists():
        return
    leftovers = [p for p in store.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


def test_missing_data_dir_is_one_line(tmp_path: Path) -> None:
    proc = launch([f"dataset.root={tmp_path / 'nope'}"], tmp_path)
    _assert_one_line_error(proc, str(tmp_path / "nope"))
    _assert_nothing_half_written(tmp_path / "store")


def test_unknown_class_ids_are_one_line(tmp_path: Path) -> None:
    proc = launch(["dataset.train_classes=[0,1,42]"], tmp_path)
    _assert_one_line_error(proc, "42")
    _assert_nothing_half_written(tmp_path / "store")


@pytest.mark.parametrize("fraction", ["0.5", "-0.1", "0.75"])
def test_noise_fraction_out_of_range_is_one_line(tmp_path: Path, fraction: str) -> None:
    proc = launch([f"noise.fraction={fraction}"], tmp_path)
    _assert_one_line_error(proc, "noise.fraction")
    _assert_nothing_half_written(tmp_path / "store")


def test_checkpoint_from_another_model_is_one_line(tmp_path: Path) -> None:
    launch(["stages=[train]", "model.embedding_size=32"], tmp_path, check=True)
    (manifest,) = _manifests(tmp_path / "store", "train")
    other = manifest.parent / "model.pt"
    proc = launch(["stages=[train]", f"model.checkpoint={other}"], tmp_path, run_name="run2")
    _assert_one_line_error(proc, "model.checkpoint")
    # The failed import wrote nothing: only the first model's artifact is in the store.
    assert len(_manifests(tmp_path / "store", "train")) == 1


def test_job_config_declares_every_stage_group() -> None:
    """``JobConfig`` names each registered stage's config group with the stage's own settings class, as a
    required field (so ``job.<group>`` is typed, and its values come only from the group's YAML), and
    nothing else beyond the job-level settings."""
    from eif.config import JobConfig, job_model, stage_groups

    groups = stage_groups()
    fields = JobConfig.model_fields
    assert {name: fields[name].annotation for name in groups if name in fields} == groups
    assert [name for name in groups if not fields[name].is_required()] == []
    job_level = {"stages", "seed", "device", "progress", "dataset", "model", "loss", "noise", "methods"}
    job_level |= {"logger", "paths", "store", "cluster", "local"}
    assert set(fields) - set(groups) == job_level
    assert job_model() is JobConfig  # nothing left to add at run time
