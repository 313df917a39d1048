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

from eif.influence.confusion import ConfusionBatch, distance_and_grad
from eif.influence.task import ConfusionTask, head
from eif.settings import Pluggable


@dataclass(frozen=True)
class AttributionProblem:
    """A trained head on cached features: ``train_features`` (N, D), ``train_labels`` (N,),
    ``weight`` (E, D), ``bias`` (E,), ``test_features`` (N_test, D), and the task (loss, measurement)."""

    task: ConfusionTask
    train_features: torch.Tensor
    train_labels: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    test_features: torch.Tensor

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    def train_embeddings(self) -> torch.Tensor:
        """z_i = W f_i + b (N, E)."""
        return head(self.train_features, self.weight, self.bias)

    def objective_gradients(self, batch: ConfusionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d0 (K,), G (K, R, E), F_p (K, R, D)): the confusions' distances and the gradient of each
        objective sign_k * d_k with respect to its member embeddings; grad_W obj_k = G_k^T F_p,k."""
        fp = batch.features(self.test_features)
        d0, g = distance_and_grad(self.task, head(fp, self.weight, self.bias), batch)
        return d0, g * batch.sign[:, None, None], fp


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


def chunks(batch: ConfusionBatch, size: int) -> list[ConfusionBatch]:
    """The batch in pieces of at most ``size`` confusions (each trimmed to its own R and pair count)."""
    return [batch.select(slice(s, s + size)) for s in range(0, len(batch), max(1, int(size)))]
