"""``methods=[random]``: a control. Independent standard-normal scores per (confusion, sample), seeded:
what an attribution method is worth when it knows nothing."""

from __future__ import annotations

import torch

from eif.influence.confusion import ConfusionBatch
from eif.methods.base import AttributionProblem, MethodConfig, MethodResult


class Random(MethodConfig):
    seed: int = 0

    def score(
        self, problem: AttributionProblem, batch: ConfusionBatch, progress: bool = False
    ) -> MethodResult:
        d0, _, _ = problem.objective_gradients(batch)
        gen = torch.Generator().manual_seed(self.seed)
        scores = torch.randn(len(batch), problem.n_train, generator=gen, dtype=torch.float64)
        return MethodResult(scores.to(problem.train_features), d0)
