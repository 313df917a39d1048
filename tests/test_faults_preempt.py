"""eif.utils.preempt: the pre-emption signal becomes a checkpoint + submitit requeue.

In-process tests put a recording Python handler where submitit's would be; the last test runs real
submitit jobs (local executor: same SignalHandler and requeue path as on SLURM, exit code instead of
``scontrol requeue``) and sends them submitit's own pre-emption signal.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import submitit

from eif.utils import preempt
from eif.utils.io import read_json, write_json

SIG = signal.SIGUSR2


@pytest.fixture
def calls() -> Iterator[list[int]]:
    """A Python handler on SIGUSR2 standing in for submitit's; records the signals it gets."""
    seen: list[int] = []
    before = signal.getsignal(SIG)
    signal.signal(SIG, lambda signum, frame: seen.append(signum))
    yield seen
    signal.signal(SIG, before)


def _deliver() -> None:
    os.kill(os.getpid(), SIG)
    time.sleep(0.01)  # the Python-level handler runs at the next bytecode boundary


def _wait(cond, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_outside_submitit_it_changes_nothing() -> None:
    before = signal.getsignal(SIG)
    signal.signal(SIG, signal.SIG_DFL)
    try:
        assert preempt.install() is False
        assert signal.getsignal(SIG) is signal.SIG_DFL
        assert preempt.requested() is False
        preempt.acknowledge()  # nothing pending: a no-op
    finally:
        signal.signal(SIG, before)


def test_polling_loop_checkpoints_then_hands_over(calls: list[int]) -> None:
    assert preempt.install(grace_s=5, poll_window_s=5)
    assert preempt.install(grace_s=5, poll_window_s=5)  # idempotent: still chained to the recorder
    assert not preempt.requested()
    _deliver()
    assert calls == []  # deferred: the loop gets to finish its step and checkpoint
    assert preempt.requested() and preempt.requested()
    preempt.acknowledge()
    assert calls == [SIG] and not preempt.requested()
    preempt.acknowledge()
    assert calls == [SIG]
    time.sleep(0.1)


def test_signal_outside_training_goes_straight_to_submitit(calls: list[int]) -> None:
    assert preempt.install(grace_s=5, poll_window_s=0.2)
    _deliver()
    assert calls == [SIG]  # nobody ever polled
    preempt.requested()
    time.sleep(0.3)  # the loop stopped polling (e.g. the job moved on to embedding)
    _deliver()
    assert calls == [SIG, SIG] and not preempt.requested()


def test_no_acknowledge_within_grace_falls_back(calls: list[int]) -> None:
    assert preempt.install(grace_s=0.3, poll_window_s=5)
    preempt.requested()
    _deliver()
    assert calls == []
    t0 = time.monotonic()
    assert _wait(lambda: calls == [SIG], 5)  # a loop that polled once, then hung
    assert 0.25 < time.monotonic() - t0 < 2
    _deliver()  # after the fallback every delivery goes straight through
    assert calls == [SIG, SIG]


class Counter:
    """A resumable job: ``steps`` slow steps, state checkpointed only when pre-emption is requested."""

    def __init__(self, folder: Path, steps: int, poll: bool = True) -> None:
        self.folder, self.steps, self.poll = folder, steps, poll

    def __call__(self) -> dict:
        preempt.install(grace_s=3, poll_window_s=2)
        state = self.folder / "state.json"
        start, acc = (read_json(state)["i"], read_json(state)["acc"]) if state.exists() else (0, 0)
        with open(self.folder / "attempts.log", "a") as fh:
            fh.write(f"{start}\n")
        for i in range(start, self.steps):
            time.sleep(0.02)
            acc = (acc * 31 + i) % 1_000_003
            write_json(self.folder / "progress.json", {"i": i + 1, "pid": os.getpid()})
            if self.poll and preempt.requested():
                write_json(state, {"i": i + 1, "acc": acc})
                preempt.acknowledge()
        return {"acc": acc}

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self)


def _expected(steps: int) -> int:
    acc = 0
    for i in range(steps):
        acc = (acc * 31 + i) % 1_000_003
    return acc


@pytest.mark.parametrize("poll", [True, False])
def test_submitit_job_requeues_and_resumes(
    tmp_path: Path, poll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = Path(__file__).resolve().parent  # the job unpickles Counter by module name
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    )
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(timeout_min=5)
    job = executor.submit(Counter(tmp_path, steps=150, poll=poll))
    assert _wait(
        lambda: (tmp_path / "progress.json").exists() and read_json(tmp_path / "progress.json")["i"] >= 20, 60
    )
    # What SLURM does before pre-emption or the time limit (submitit's LocalJob._interrupt signals
    # only the local controller process, which does not forward USR2).
    os.kill(read_json(tmp_path / "progress.json")["pid"], SIG)
    assert _wait(job.done, 120)
    assert job.result() == {"acc": _expected(150)}
    starts = [int(x) for x in (tmp_path / "attempts.log").read_text().split()]
    if poll:  # checkpointed mid-run: the second attempt resumed where the first stopped
        assert len(starts) == 2 and starts[0] == 0 and 20 <= starts[1] < 150
    else:  # nothing polled: requeued at once and redone from the start
        assert starts == [0, 0]
