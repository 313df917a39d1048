"""Run loggers: one interface, a Weights & Biases implementation and a no-op one.

W&B runs ``offline`` unless ``logger.mode`` says otherwise, and every directory it writes
(run files, artifact staging, cache, config) lives inside the run's output dir, so nothing leaks
into the home directory and nothing waits for a network that is not there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from eif.settings import dump
from eif.utils.errors import EifError
from eif.utils.io import write_json

log = logging.getLogger(__name__)


class RunLogger:
    """The no-op logger (``logger=none``); also the interface every logger implements."""

    active = False  # whether logged values go anywhere (stages skip building image tables if not)

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log time-series values (e.g. per-epoch loss)."""

    def summary(self, values: dict[str, Any]) -> None:
        """Set final, run-level values (e.g. test Recall@1)."""

    def table(self, name: str, frame: pd.DataFrame) -> None:
        """Log a table; cells holding a PIL image are logged as images."""

    def image(self, name: str, path: Path) -> None:
        """Log an image file (PNG)."""

    def artifact(self, name: str, kind: str, paths: Sequence[Path], metadata: dict | None = None) -> None:
        """Log files as a versioned artifact."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; always called, also when the job fails."""


class Prefixed(RunLogger):
    """``base``'s time series under ``prefix/`` for a second training inside one job (the ``clean``
    stage's re-trainings): their epochs restart at 1, and W&B drops (with a warning per call) any step
    below one already logged, so the values are logged at W&B's next step with the epoch as
    ``prefix/epoch``. Everything else goes to ``base`` unchanged."""

    def __init__(self, base: RunLogger, prefix: str) -> None:
        self.base, self.prefix = base, prefix
        self.active = base.active

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {f"{self.prefix}/{k}": v for k, v in metrics.items()}
        if step is not None:
            values[f"{self.prefix}/epoch"] = step
        self.base.log(values)

    def summary(self, values: dict[str, Any]) -> None:
        self.base.summary(values)

    def table(self, name: str, frame: pd.DataFrame) -> None:
        self.base.table(name, frame)

    def image(self, name: str, path: Path) -> None:
        self.base.image(name, path)

    def artifact(self, name: str, kind: str, paths: Sequence[Path], metadata: dict | None = None) -> None:
        self.base.artifact(name, kind, paths, metadata)


def wandb_dirs(wdir: Path) -> Path:
    """Point every directory W&B writes (run files, artifact staging, cache, config) inside ``wdir``.

    wandb reads these variables at init time; this keeps all its bytes inside the run (or sweep) dir.
    """
    for var, sub in (
        ("WANDB_DIR", ""),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        (wdir / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(wdir / sub)
    return wdir


def wandb_api_key() -> str | None:
    """The W&B API key from ``WANDB_API_KEY`` or the netrc entry ``wandb login`` writes, if any."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return auth[2] if auth else None


def wandb_reachable(timeout_s: float = 5.0) -> str | None:
    """None when the W&B server accepts a TCP connection within ``timeout_s``, else why not."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout_s).close()
    except OSError as err:
        return f"{url.hostname}:{port} unreachable ({err.strerror or err})"
    return None


LOGGED_KEYS = "logged_keys.json"  # in the run's wandb/ dir: what the job logged (eif.dashboard reads it)


class WandbLogger(RunLogger):
    """W&B with every directory inside the run dir. ``mode=online`` checks first: no API key is one
    error line; a server that cannot be reached falls back to offline with one warning line (the run
    is then uploaded later with ``wandb sync``).

    At the end the names of everything logged (summary keys, tables, time series, images) are written to
    ``wandb/logged_keys.json``: an offline run keeps them only inside its binary ``.wandb`` log, for which
    wandb no longer ships a Python reader, and ``eif dashboard`` builds its panels from them."""

    active = True

    def __init__(self, lcfg: Any, config: dict[str, Any], run_dir: Path) -> None:
        import wandb

        self._wandb = wandb
        self._logged: dict[str, set[str]] = {
            "summary": set(),
            "tables": set(),
            "history": set(),
            "images": set(),
        }
        wdir = self._wdir = wandb_dirs(run_dir / "wandb")
        mode = lcfg.mode
        if mode == "online":
            if wandb_api_key() is None:
                raise EifError(
                    "logger.mode=online needs a W&B API key (run `wandb login` or set WANDB_API_KEY); "
                    "or use logger.mode=offline and `wandb sync` later"
                )
            problem = wandb_reachable()
            if problem is not None:
                log.warning(
                    "W&B %s: logging offline to %s instead (upload later with wandb sync)", problem, wdir
                )
                mode = "offline"
        os.environ["WANDB_MODE"] = mode
        try:
            self.run = wandb.init(
                project=lcfg.project,
                entity=lcfg.entity,
                group=lcfg.group,
                job_type=lcfg.job_type,
                name=lcfg.name,
                tags=list(lcfg.tags),
                dir=str(wdir),
                mode=mode,
                config=config,
                settings=wandb.Settings(init_timeout=lcfg.init_timeout, silent=True),
            )
        except Exception as err:  # noqa: BLE001 - wandb raises its own error types for every failure
            raise EifError(f"W&B could not start a run ({' '.join(str(err).split())[:200]})") from None

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._logged["history"].update(metrics)
        self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        self._logged["summary"].update(values)
        for k, v in values.items():
            self.run.summary[k] = v

    def table(self, name: str, frame: pd.DataFrame) -> None:
        frame = frame.reset_index(drop=True)
        for c in frame.select_dtypes(include="object").columns:
            frame[c] = frame[c].map(lambda v: self._wandb.Image(v) if isinstance(v, Image.Image) else v)
        self._logged["tables"].add(name)
        self.run.log({name: self._wandb.Table(dataframe=frame)})

    def image(self, name: str, path: Path) -> None:
        self._logged["images"].add(name)
        self.run.log({name: self._wandb.Image(str(path))})

    def artifact(self, name: str, kind: str, paths: Sequence[Path], metadata: dict | None = None) -> None:
        art = self._wandb.Artifact(name=name, type=kind, metadata=metadata or {})
        for p in paths:
            art.add_file(str(p), name=Path(p).name)
        self.run.log_artifact(art)

    def finish(self, exit_code: int = 0) -> None:
        offline = self.run.settings.mode == "offline"
        where = Path(self.run.dir).parent  # files/ is inside the run's own dir
        url = None if offline else self.run.url  # (an offline run warns when asked for its URL)
        self.run.finish(exit_code=exit_code)
        logged = {k: sorted(v) for k, v in self._logged.items()}
        run = {"dir": str(where), "project": self.run.project, "entity": self.run.entity or None}
        run |= {"group": self.run.group, "name": self.run.name, "id": self.run.id}
        write_json(self._wdir / LOGGED_KEYS, {"run": run, **logged})
        if offline:
            log.info("W&B offline run: %s (upload it with: wandb sync %s)", where, where)
        elif url:
            log.info("W&B run: %s", url)


def build_logger(job: Any, run_dir: Path) -> RunLogger:
    """The job's logger (``job.logger``); W&B gets the whole validated config."""
    if job.logger.kind == "none" or job.logger.mode == "disabled":
        return RunLogger()
    return WandbLogger(job.logger, dump(job), run_dir)
