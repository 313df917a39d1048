"""``methods=[representer]``: representer points for the linear head (after Yeh et al., NeurIPS 2018).

The original refits the last layer with an L2 penalty, W* = argmin mean_i L_i(W) + lambda |W|^2,
and reads W* = sum_i alpha_i f_i^T off stationarity. With the losses here that problem has no
minimiser: they normalise z, so with the bias fixed the loss barely depends on the scale of W and
the penalty drives W towards 0 (the refit collapses; ``tests/test_methods.py`` shows it). So the
penalty is anchored at the trained head instead:

    W* = argmin_W mean_i L_i(W) + lambda |W - W0|_F^2      (bias and loss parameters fixed, L-BFGS from W0)

and stationarity gives W* = W0 + sum_i alpha_i f_i^T with alpha_i = -g*_i / (2 lambda N), g*_i the
loss gradient in z at W*: every embedding is the trained one plus training-sample terms,
z_t = W0 f_t + b + sum_i alpha_i (f_i . f_t). Removing sample i's term moves the objective by about
-sum_r G*_r . alpha_i (f_i . f_r) (G* its gradient in the member embeddings at W*); that change is
the score, so **positive = harmful** (without the sample's pull the confusion would be better
separated). It equals the gradient dot product at W* divided by 2 lambda N. ``info`` records how
stationary W* is (|W0 + sum_i alpha_i f_i^T - W*| / |W* - W0|).
"""

from __future__ import annotations

import torch
from pydantic import PositiveFloat, PositiveInt

from eif.influence.confusion import ConfusionBatch
from eif.influence.curvature import loss_grad_z
from eif.influence.task import head
from eif.methods.base import AttributionProblem, MethodConfig, MethodResult
from eif.methods.grad_dot import gradient_products
from eif.settings import SPEED, setting


def fit_regularised_head(problem: AttributionProblem, l2: float, iters: int) -> torch.Tensor:
    """W* minimising mean_i L_i(W f_i + b) + l2 |W - W0|_F^2, by full-batch L-BFGS from W0."""
    p = problem
    w0 = p.weight.detach()
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=iters,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = p.task.train_loss(head(p.train_features, w, p.bias), p.train_labels).mean()
        value = loss + l2 * (w - w0).pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


class Representer(MethodConfig):
    """Representer-point scores of the refitted head (``l2``: the penalty lambda; ``iters``: L-BFGS)."""

    l2: PositiveFloat = 1e-3
    iters: PositiveInt = 200
    k_chunk: PositiveInt = setting(100, unkeyed=SPEED)

    def score(
        self, problem: AttributionProblem, batch: ConfusionBatch, progress: bool = False
    ) -> MethodResult:
        p = problem
        w_star = fit_regularised_head(p, self.l2, self.iters)
        fitted = AttributionProblem(p.task, p.train_features, p.train_labels, w_star, p.bias, p.test_features)
        gz = loss_grad_z(p.task, fitted.train_embeddings(), p.train_labels)
        alpha = -gz / (2 * self.l2 * p.n_train)
        moved = w_star - p.weight
        gap = float((alpha.T @ p.train_features - moved).norm() / moved.norm().clamp_min(1e-30))
        dots, _, _ = gradient_products(fitted, batch, self.k_chunk, gz)
        d0, _, _ = p.objective_gradients(batch)
        info = {"stationarity_gap": gap, "weight_change": float((w_star - p.weight).norm() / p.weight.norm())}
        return MethodResult(dots / (2 * self.l2 * p.n_train), d0, info=info)
