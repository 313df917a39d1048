"""Lines a user must see, printed once.

A warning or error goes to stderr as ``warning: ...`` / ``error: ...`` and, for the run's log file,
through :mod:`logging` marked ``on_stderr``; the console handler of the Hydra app drops marked records
(:class:`NotOnStderr`, attached in ``conf/hydra/default.yaml``), so the terminal shows each line once.
"""

from __future__ import annotations

import logging
import sys

MARK = "on_stderr"


class NotOnStderr(logging.Filter):
    """Drops records that were also printed to stderr (the console already shows them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, MARK, False)


def warn(log: logging.Logger, message: str) -> None:
    """``warning: message`` on stderr, and the message in the run's log file."""
    log.warning("%s", message, extra={MARK: True})
    print(f"warning: {message}", file=sys.stderr, flush=True)


def error(log: logging.Logger, message: str) -> None:
    """``error: message`` on stderr, and the message in the run's log file."""
    log.error("%s", message, extra={MARK: True})
    print(f"error: {message}", file=sys.stderr, flush=True)
