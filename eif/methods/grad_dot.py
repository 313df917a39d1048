"""``methods=[grad_dot]``: TracIn on the last layer at the final checkpoint, i.e. IF with H = I.

score_i = <grad_W obj, grad_W L_i> = sum_r (G_r . g_i)(F_p,r . f_i) with grad_W obj = G^T F_p and
grad_W L_i = g_i f_i^T: one gradient step on sample i's loss changes the objective by -lr times this,
so **positive = harmful** (a step on the sample pulls the confusion together).
"""

from __future__ import annotations

import torch
from pydantic import PositiveInt

from eif.influence.confusion import ConfusionBatch
from eif.influence.curvature import loss_grad_z
from eif.methods.base import AttributionProblem, MethodConfig, MethodResult, chunks
from eif.settings import SPEED, setting

Products = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def gradient_products(
    problem: AttributionProblem, batch: ConfusionBatch, k_chunk: int, gz: torch.Tensor | None = None
) -> Products:
    """(<grad_W obj_k, grad_W L_i> (K, N), |grad_W obj_k|_F (K,), d0 (K,)), with the per-sample loss
    gradients ``gz`` (N, E) at the trained head unless given."""
    p = problem
    gz = loss_grad_z(p.task, p.train_embeddings(), p.train_labels) if gz is None else gz
    scores, norms, d0s = [], [], []
    for sub in chunks(batch, k_chunk):
        d0, g, fp = p.objective_gradients(sub)  # (k, R, E), (k, R, D)
        a = torch.einsum("kre,ne->krn", g, gz)  # G_r . g_i
        b = torch.einsum("krd,nd->krn", fp, p.train_features)  # F_p,r . f_i
        scores.append((a * b).sum(1))
        gram = (g @ g.mT) * (fp @ fp.mT)  # |G^T F_p|_F^2 = sum_rs (G G^T)_rs (F_p F_p^T)_rs
        norms.append(gram.sum((1, 2)).clamp_min(0).sqrt())
        d0s.append(d0)
    return torch.cat(scores), torch.cat(norms), torch.cat(d0s)


class GradDot(MethodConfig):
    """Gradient dot product of the confusion's objective and each sample's loss (identity Hessian)."""

    k_chunk: PositiveInt = setting(100, unkeyed=SPEED)

    def score(
        self, problem: AttributionProblem, batch: ConfusionBatch, progress: bool = False
    ) -> MethodResult:
        scores, _, d0 = gradient_products(problem, batch, self.k_chunk)
        return MethodResult(scores, d0)
