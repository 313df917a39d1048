"""Sweeps that finish: every job of a ``-m`` sweep runs, whatever the others end with, and the sweep
closes with one line per job.

Hydra's basic launcher runs a sweep's jobs one after another in the launching process, so a job that
exits (``sys.exit``) would end the sweep; submitit runs them as processes of their own, and the first
failed result it collects hides the others. In a sweep, :func:`run_and_record` therefore turns a job's
failure (its one ``error:`` line already printed, or an unexpected exception, printed with its
traceback) into ``outcome.json`` in the job's output dir and lets the launcher go on. Interruptions
(Ctrl-C, SIGTERM, SLURM pre-emption: exit codes above 128) still end the job as before, so submitit
can requeue it. :class:`SweepSummary` (a Hydra callback, ``conf/hydra/default.yaml``) reads every
job's ``outcome.json`` when the sweep ends, prints one line per job and exits 1 when any job failed or
left no outcome (killed, out of memory).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from eif.utils.errors import JobExit

log = logging.getLogger("eif")

OUTCOME = "outcome.json"


class SweepFailed(SystemExit):
    """The sweep ran every job and at least one failed (its summary is printed)."""


def in_sweep() -> bool:
    """Whether this job is one of a ``-m`` sweep."""
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _write(job_dir: Path, outcome: dict[str, Any]) -> None:
    # plain json and os.replace: eif.utils.io would import torch, and a job that failed on a stage-name
    # typo has not imported it yet
    job_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{OUTCOME}.", dir=job_dir)
    with os.fdopen(fd, "w") as f:
        json.dump(outcome, f, indent=2)
    os.replace(tmp, job_dir / OUTCOME)


def run_and_record(task: Callable[[DictConfig], dict | None], cfg: DictConfig) -> dict | None:
    """Run one sweep job and record how it ended in its output dir; the job's own failures (exit 1 or
    2, or an exception) are recorded and returned from, so the launcher goes on with the next job."""
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        record = task(cfg)
    except JobExit as err:
        if not isinstance(err.code, int) or err.code > 128:  # an interruption: submitit requeues it
            raise
        _write(job_dir, {"exit": err.code, "error": err.message})
        return None
    except Exception as err:  # noqa: BLE001 - a bug in one job must not hide the others' results
        log.exception("the job failed")
        _write(job_dir, {"exit": 1, "error": f"{type(err).__name__}: {err} (traceback in {job_dir}/eif.log)"})
        return None
    skipped = (record or {}).get("skipped") or {}
    notes = sorted(set(skipped.values()))
    note = "; ".join(notes) + f" (skipped: {', '.join(skipped)})" if notes else ""
    _write(job_dir, {"exit": 0, "note": note})
    return record


def _overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(s) for s in OmegaConf.to_container(OmegaConf.load(path)) or []]  # type: ignore[union-attr]


def summary(sweep_dir: Path) -> tuple[list[str], int]:
    """One line per job dir of ``sweep_dir`` (numbered as Hydra numbers them, with the overrides that set
    it apart from the other jobs) and the number of jobs that failed or left no outcome."""
    jobs = sorted(
        (d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()),
        key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name),
    )
    overrides = {d: _overrides(d) for d in jobs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if len(jobs) > 1 else set()
    lines, failed = [], 0
    for d in jobs:
        swept = " ".join(o for o in overrides[d] if o not in shared)  # what sets this job apart
        head = f"job {d.name}" + (f" ({swept})" if swept else "")
        path = d / OUTCOME
        if not path.is_file():
            failed += 1
            lines.append(f"{head}: failed: no outcome recorded (killed or crashed; see {d}/eif.log)")
            continue
        outcome = json.loads(path.read_text())
        if outcome["exit"] == 0:
            lines.append(f"{head}: ok" + (f", {outcome['note']}" if outcome.get("note") else ""))
        else:
            failed += 1
            lines.append(f"{head}: failed (exit {outcome['exit']}): {outcome['error']}")
    return lines, failed


class SweepSummary(Callback):
    """Prints the sweep's per-job summary when it ends; exits 1 when a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        lines, failed = summary(sweep_dir)
        print(f"sweep {sweep_dir}: {len(lines)} jobs, {failed} failed", flush=True)
        for line in lines:
            print(f"  {line}", flush=True)
        if failed:
            raise SweepFailed(1)
