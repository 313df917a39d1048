# pyright: strict
"""The attribution problem every method and solver works on: a trained head on cached features."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eif.influence.confusion import ConfusionBatch, distance_and_grad
from eif.influence.task import ConfusionTask, head


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
