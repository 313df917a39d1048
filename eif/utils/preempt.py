"""Pre-emption and time-limit handling: checkpoint mid-epoch, then let submitit requeue the job.

SLURM warns a job before pre-empting it or killing it at its time limit with a signal; submitit asks
for SIGUSR2 (``--signal=USR2@<signal_delay_s>``; the ``SUBMITIT_PREEMPT_SIGNAL`` environment
variable can change it) and, inside the job, binds it to ``SignalHandler.checkpoint_and_try_requeue``.
That handler calls the submitted callable's ``checkpoint`` method - for Hydra's submitit launcher
(1.2) this is ``BaseSubmititLauncher.checkpoint``, which resubmits the same job with the same
overrides - pickles the result, runs ``scontrol requeue <job>`` and exits the process. On its
own it would stop training at an arbitrary instruction and lose the work since the last epoch.

:func:`install` puts a small handler in front of submitit's. On the signal it only sets a flag.
The training loop polls :func:`requested` after every optimiser step; when it sees True it writes a
checkpoint atomically and calls :func:`acknowledge`, which hands over to submitit's handler (requeue
and exit; it does not return). The rerun job finds the checkpoint and continues from that step.
If no training loop is polling - no :func:`requested` call in the last ``poll_window_s`` seconds
(e.g. the job is embedding or evaluating) or no :func:`acknowledge` within ``grace_s`` seconds of
the signal - submitit's handler runs anyway, and the rerun recomputes the unfinished stage.

Outside submitit (no Python handler bound to the signal) :func:`install` changes nothing.

Termination outside SLURM (:func:`handle_termination`): Ctrl-C (SIGINT) and SIGTERM are handled the
same way. While a training loop polls, the signal only sets a flag; the loop writes its checkpoint
and :func:`acknowledge` raises :class:`Interrupted`. Anywhere else (or on a second signal) the
handler raises :class:`Interrupted` at once. The entry point turns it into one line and exit code
130 (SIGINT) or 143 (SIGTERM); re-running the same command resumes. Under submitit SIGTERM stays
submitit's (it ignores the SIGTERM that SLURM sends around a requeue).

DataLoader workers ignore all three signals (:func:`ignore_signals_in_worker`, their
``worker_init_fn``): the main process handles them, whatever the multiprocessing start method.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], Any]


class _State:
    """Module state; one per process (forked DataLoader workers ignore the signal)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.original: Handler | None = None
        self.pid = -1
        self.grace_s = 0.0
        self.poll_window_s = 0.0
        self.last_poll = float("-inf")  # time.monotonic() of the latest requested() call
        self.pending = False  # signal received, training loop not yet acknowledged
        self.fallback = False  # next delivery goes straight to the original handler
        self.timer: threading.Timer | None = None


_state = _State()


class Interrupted(BaseException):
    """The job was asked to stop (SIGINT or SIGTERM); a training checkpoint was written if one was due."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Termination:
    def __init__(self) -> None:
        self.pending: int | None = None
        self.pid = -1


_term = _Termination()


def _signal_number() -> int:
    """The signal submitit listens to in this job (``SIG`` + ``$SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return int(getattr(signal, name, signal.SIGUSR2))


def install(grace_s: float = 60.0, poll_window_s: float = 30.0) -> bool:
    """Chain onto submitit's pre-emption handler; True when installed (a no-op otherwise).

    ``grace_s``: seconds the training loop gets to checkpoint and acknowledge after the signal
    (keep it below the launcher's ``signal_delay_s``). ``poll_window_s``: a loop that called
    :func:`requested` within this many seconds before the signal counts as training.
    Call it from the main thread at job start, after submitit has set up its handlers.
    """
    global _state
    if threading.current_thread() is not threading.main_thread():
        return False
    signum = _signal_number()
    current = signal.getsignal(signum)
    if current is _on_signal:  # already installed in this process: keep the original we chained to
        current = _state.original
    if not callable(current):  # SIG_DFL / SIG_IGN / None: not under submitit, leave it alone
        return False
    _cancel_timer()
    _state = _State()
    _state.signum, _state.original, _state.pid = signum, current, os.getpid()
    _state.grace_s, _state.poll_window_s = grace_s, poll_window_s
    signal.signal(signum, _on_signal)
    log.info("pre-emption handler installed on %s (grace %.0f s)", signal.Signals(signum).name, grace_s)
    return True


def requested() -> bool:
    """True once a pre-emption or termination signal has arrived: checkpoint now, then :func:`acknowledge`."""
    _state.last_poll = time.monotonic()
    return _state.pending or _term.pending is not None


def acknowledge() -> None:
    """The checkpoint is on disk: run submitit's handler (checkpoint -> requeue -> exit), or raise
    :class:`Interrupted` for a termination signal.

    Does not return when a request is pending (submitit raises ``SystemExit``); a no-op otherwise.
    """
    if _term.pending is not None and os.getpid() == _term.pid:
        signum, _term.pending = _term.pending, None
        raise Interrupted(signum)
    if not _state.pending or os.getpid() != _state.pid:
        return
    _cancel_timer()
    _state.pending = False
    log.warning("checkpoint written after pre-emption signal; handing over to submitit to requeue")
    _call_original()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _state.pid:
        return  # a forked worker (e.g. a DataLoader process): the main process handles it
    polling = time.monotonic() - _state.last_poll <= _state.poll_window_s
    if _state.fallback or not polling:
        log.warning("pre-emption signal outside the training loop: submitit requeues now")
        _state.pending = False
        _call_original(frame)
        return
    if _state.pending:
        return  # a repeated signal; the first one's timer is already running
    _state.pending = True
    log.warning("pre-emption signal: checkpointing after the current optimiser step")
    _state.timer = threading.Timer(_state.grace_s, _give_up, args=(signum,))
    _state.timer.daemon = True
    _state.timer.start()


def _give_up(signum: int) -> None:
    """Timer thread: the loop did not acknowledge in time; re-deliver the signal to the main thread."""
    if not _state.pending:
        return
    _state.fallback = True
    log.warning(
        "no checkpoint within %.0f s of the pre-emption signal; requeueing without one", _state.grace_s
    )
    _thread.interrupt_main(signal.Signals(signum))  # runs _on_signal in the main thread, which now falls back


def _cancel_timer() -> None:
    if _state.timer is not None:
        _state.timer.cancel()
        _state.timer = None


def _call_original(frame: FrameType | None = None) -> None:
    assert _state.signum is not None and _state.original is not None
    _state.original(_state.signum, frame)


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _term.pid:
        return  # a forked worker: the main process handles it
    polling = time.monotonic() - _state.last_poll <= max(_state.poll_window_s, 5.0)
    if polling and _term.pending is None:
        _term.pending = signum
        log.warning("%s: writing a training checkpoint after the current step", signal.Signals(signum).name)
        return
    raise Interrupted(signum)


@contextmanager
def handle_termination() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as described in the module doc while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watched = [signal.SIGINT]
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # not under submitit
        watched.append(signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in watched}
    _term.pending, _term.pid = None, os.getpid()
    for s in watched:
        signal.signal(s, _on_terminate)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        _term.pending = None


def ignore_signals_in_worker(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: leave SIGINT, SIGTERM and the pre-emption signal to the main process."""
    for s in (signal.SIGINT, signal.SIGTERM, _signal_number()):
        signal.signal(s, signal.SIG_IGN)
