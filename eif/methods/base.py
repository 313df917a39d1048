"""The contract between the influence engine and an attribution method.

Following kronfluence's ``Task`` idea, a method sees an :class:`AttributionProblem` (a per-sample
training loss and a measurement through :class:`~eif.influence.task.ConfusionTask`, cached trunk
features, the trained head) and a :class:`~eif.influence.confusion.ConfusionBatch`; never data sets,
images or loss parameters. It returns a score for every (confusion, training sample): **positive =
harmful** (the sample makes the confusion worse: for a pair it pulls the two test samples together),
negative = helpful, for every method alike.

A method is one file in ``eif/methods/`` (a settings class with ``score``) plus one YAML in
``conf/methods/`` whose top key is the method's name and whose ``_target_`` names the class; a job
runs the methods its ``methods`` group selects (``methods=[eif,if,grad_dot]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from eif.influence.confusion import ConfusionBatch
from eif.influence.problem import AttributionProblem
from eif.settings import Pluggable

__all__ = ["AttributionProblem", "MethodConfig", "MethodResult", "chunks"]


@dataclass
class MethodResult:
    """``scores`` (K, N) positive = harmful; ``d0`` (K,) the confusions' distances; ``arrays``: extra
    per-confusion arrays saved with the scores; ``info``: JSON-able facts about the run (residuals,
    iterations, settings actually used) recorded in ``influence.json``."""

    scores: torch.Tensor
    d0: torch.Tensor
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class MethodConfig(Pluggable):
    """Base of every attribution method's settings; subclasses implement :meth:`score`."""

    abstract: ClassVar[bool] = True

    def score(
        self, problem: AttributionProblem, batch: ConfusionBatch, progress: bool = False
    ) -> MethodResult:
        raise NotImplementedError

    def diagnose(self, problem: AttributionProblem) -> dict[str, Any]:
        """JSON-able facts about the method on this trained head that do not depend on the confusions,
        computed once per model (recorded in ``influence.json``'s ``diagnostics.methods``); default none."""
        return {}


def chunks(batch: ConfusionBatch, size: int) -> list[ConfusionBatch]:
    """The batch in pieces of at most ``size`` confusions (each trimmed to its own R and pair count)."""
    return [batch.select(slice(s, s + size)) for s in range(0, len(batch), max(1, int(size)))]
