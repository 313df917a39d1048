"""The command line: ``eif ...`` (console script) and ``python launch.py ...`` run the same Hydra app.

User errors end as one line on stderr: :class:`~eif.utils.errors.EifError` from the job (exit 2),
Hydra's own config errors (unknown key, unknown group option, bad override syntax; exit 2), an
interruption (Ctrl-C: exit 130, SIGTERM: 143) and a disk that is full or read-only (exit 1).
"""

from __future__ import annotations

import errno
import io
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
from eif.sweep_outcome import SweepFailed, in_sweep, run_and_record
from eif.utils.errors import JobExit

# torch.func's vmap still calls torch.jit.script internally and warns about it on the first call: not
# ours to fix, and a stray stderr line would break the one-line error contract.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def config_dir() -> Path:
    """``conf/`` beside the package in a source checkout, else the copy installed inside it."""
    here = Path(__file__).resolve().parent
    source = here.parent / "conf"
    return source if (source / "config.yaml").is_file() else here / "conf"


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
        return " ".join(lines)


_startup: _StartupErrors | None = None


def _job_started() -> None:
    """The job function runs: give stderr back (later output is the job's own)."""
    global _startup
    if _startup is not None:
        sys.stderr = _startup.real
        _startup = None


def run(cfg: DictConfig) -> dict | None:
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


def _run(cfg: DictConfig) -> dict | None:
    from eif.stage_names import first_unknown
    from eif.utils.requirements import torchvision_problem

    problem = first_unknown(cfg.get("stages")) or torchvision_problem()
    if problem:  # before the pipeline's imports (torch, faiss, ...): a typo is reported in a second
        import logging

        from eif.utils.console import error

        error(logging.getLogger("eif"), problem)
        raise JobExit(2, problem)
    from eif.pipeline import run_job_cli

    return run_job_cli(cfg)


def main(configs: str | os.PathLike | None = None) -> None:
    """Run the Hydra app; Hydra's startup errors are printed as one ``error:`` line with exit code 2."""
    global _startup
    if sys.argv[1:2] == ["dashboard"]:  # `eif dashboard ...`: a W&B report of a sweep, not a Hydra job
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


def disk_error(err: OSError) -> str | None:
    """One line for a full or read-only disk (or a path we may not write), else None."""
    if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return None
    where = err.filename or "a file"
    return f"cannot write {where}: {os.strerror(err.errno)}"
