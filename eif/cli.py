"""The command line: ``eif ...`` (console script) and ``python launch.py ...`` run the same Hydra app.

The top of eif's layers (docs/architecture.md, "Layers"): nothing in eif imports this module.
User errors end as one line on stderr: :class:`~eif.utils.errors.EifError` from the job (exit 2),
Hydra's own config errors (unknown key, unknown group option, bad override syntax; exit 2), an
interruption (Ctrl-C: exit 130, SIGTERM: 143) and a disk that is full or read-only (exit 1).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import eif.resolvers  # noqa: F401 - registers the resolvers before Hydra composes
from eif.settings import config_dir
from eif.stage_names import first_unknown
from eif.sweep_outcome import SweepFailed, in_sweep, run_and_record
from eif.utils.console import error
from eif.utils.errors import JobExit
from eif.utils.requirements import torchvision_problem

# torch.func's vmap still calls torch.jit.script internally and warns about it on the first call: not
# ours to fix, and a stray stderr line would break the one-line error contract.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


class _StartupErrors(io.TextIOBase):
    """Holds what Hydra writes to stderr before the job starts, so its errors become one line."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def one_line(self) -> str:
        lines = [ln.strip() for ln in "".join(self.parts).splitlines() if ln.strip()]
        lines = [
            ln for ln in lines if "HYDRA_FULL_ERROR" not in ln and not ln.startswith(("Traceback", "File "))
        ]
        # Hydra appends its config search path (every provider's directory) to a missing-config error:
        # noise beside the options it lists, and paths of this machine.
        return " ".join(lines).split(" Config search path:")[0]


_startup: _StartupErrors | None = None


def _job_started() -> None:
    """The job function runs: give stderr back (later output is the job's own)."""
    global _startup
    if _startup is not None:
        sys.stderr = _startup.real
        _startup = None


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """The Hydra job: the stage names first, then the pipeline (every failure one line)."""
    _job_started()
    if in_sweep():  # one job's failure is recorded and the sweep goes on (eif.sweep_outcome)
        return run_and_record(_run, cfg)
    try:
        return _run(cfg)
    except JobExit:
        hc = HydraConfig.get()
        _remove_if_bare(Path(hc.runtime.output_dir), {hc.output_subdir or ".hydra", f"{hc.job.name}.log"})
        raise


def _remove_if_bare(run_dir: Path, hydra_files: set[str]) -> None:
    """A job that failed before writing anything leaves no run dir: remove it when it holds only what Hydra
    wrote on start (its ``.hydra/`` configs and the log file)."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_files:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run(cfg: DictConfig) -> dict[str, Any] | None:
    problem = first_unknown(cfg.get("stages")) or torchvision_problem()
    if problem:
        error(logging.getLogger("eif"), problem)
        raise JobExit(2, problem)
    # A deferred eif import (tests/test_imports.py, STARTUP_DEFERRED): the pipeline pulls in
    # torch, faiss and every stage, seconds that a typo'd stage name is reported without.
    from eif.pipeline import run_job_cli

    return run_job_cli(cfg)


def main(configs: str | os.PathLike | None = None) -> None:
    """Run the Hydra app; Hydra's startup errors are printed as one ``error:`` line with exit code 2."""
    global _startup
    if sys.argv[1:2] == ["dashboard"]:  # `eif dashboard ...`: a W&B report of a sweep, not a Hydra job
        # Deferred (tests/test_imports.py, STARTUP_DEFERRED): the dashboard imports torch and pandas,
        # seconds every other command would pay for at startup.
        from eif.dashboard import main as dashboard

        sys.exit(dashboard(sys.argv[2:]))
    os.environ.setdefault("EIF_ROOT", str(Path.cwd()))
    app = hydra.main(version_base="1.3", config_path=str(configs or config_dir()), config_name="config")(run)
    _startup = _StartupErrors(sys.stderr)
    sys.stderr = _startup
    try:
        app()
    except SystemExit as exit_:
        held = _startup
        _job_started()
        if held is not None and exit_.code not in (0, None) and not isinstance(exit_, SweepFailed):
            message = held.one_line() or f"exit code {exit_.code}"
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise
    finally:
        _job_started()
