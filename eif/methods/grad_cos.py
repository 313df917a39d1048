"""``methods=[grad_cos]``: the cosine between grad_W obj and grad_W L_i (gradient similarity without
the per-sample magnitude). |grad_W L_i|_F = |g_i| |f_i| (rank one). Positive = harmful, as grad_dot."""

from __future__ import annotations

from pydantic import PositiveInt

from eif.influence.confusion import ConfusionBatch
from eif.influence.curvature import loss_grad_z
from eif.methods.base import AttributionProblem, MethodConfig, MethodResult
from eif.methods.grad_dot import gradient_products
from eif.settings import SPEED, setting


class GradCos(MethodConfig):
    """Cosine of the two gradients."""

    k_chunk: PositiveInt = setting(100, unkeyed=SPEED)

    def score(
        self, problem: AttributionProblem, batch: ConfusionBatch, progress: bool = False
    ) -> MethodResult:
        gz = loss_grad_z(problem.task, problem.train_embeddings(), problem.train_labels)
        dots, obj_norm, d0 = gradient_products(problem, batch, self.k_chunk, gz)
        sample_norm = gz.norm(dim=1) * problem.train_features.norm(dim=1)
        return MethodResult(dots / (obj_norm[:, None] * sample_norm[None]).clamp_min(1e-30), d0)
