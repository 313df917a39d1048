# pyright: strict
"""How well the trained head meets the classic influence function's assumptions (recorded, not fixed).

IF linearises around a stationary point W0 of the mean training loss and inverts its damped Hessian.
Two numbers say how far a model is from that picture:

- **stationarity ratio** |mean_i grad_W L_i|_F / mean_i |grad_W L_i|_F, over the head weight W that
  the methods perturb (bias and loss parameters fixed), with the per-sample training loss L_i on the
  cached features. grad_W L_i = g_i f_i^T (g_i = dL_i/dz_i), so the mean gradient is G^T F / N (one
  head pass) and |grad_W L_i|_F = |g_i| |f_i|. 0 at a stationary point; 1 when all samples pull the
  same way. Above ``STATIONARITY_WARN`` the influence stage prints a one-line note.
- **eigenvalues of H above the damping** lambda: the directions along which (H + lambda I)^-1 differs
  from 1 / lambda by more than a factor 2; with few of them IF is about grad_dot / lambda corrected
  along those directions. Estimated by ``steps`` Lanczos iterations on the undamped H
  (:func:`eif.influence.krylov.lanczos`, one product with H each) as the number of Ritz values above
  lambda: a lower bound (the k-th largest Ritz value is at most the k-th largest eigenvalue), exact
  once Lanczos has converged on the top eigenvalues down to lambda, i.e. when the count is well below
  ``steps`` (``saturated`` says when it is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from eif.influence.curvature import loss_grad_z
from eif.influence.hessian import HeadHessian
from eif.influence.krylov import lanczos
from eif.influence.problem import AttributionProblem
from eif.influence.torch_typed import norm

# Above this stationarity ratio the mean training gradient is more than a tenth of a typical
# per-sample gradient: W0 is then far from the stationary point IF's derivation assumes.
STATIONARITY_WARN = 0.1


@dataclass(frozen=True)
class Stationarity:
    """``mean_gradient_norm`` |mean_i grad_W L_i|_F, ``mean_sample_gradient_norm`` mean_i |grad_W L_i|_F,
    and their ``ratio`` (module doc)."""

    mean_gradient_norm: float
    mean_sample_gradient_norm: float

    @property
    def ratio(self) -> float:
        return self.mean_gradient_norm / max(self.mean_sample_gradient_norm, 1e-30)

    def record(self) -> dict[str, Any]:
        """The JSON entry of ``influence.json``'s ``diagnostics``."""
        return {
            "stationarity_ratio": self.ratio,
            "mean_gradient_norm": self.mean_gradient_norm,
            "mean_sample_gradient_norm": self.mean_sample_gradient_norm,
            "stationarity_warn": STATIONARITY_WARN,
        }


def stationarity(problem: AttributionProblem, gz: torch.Tensor | None = None) -> Stationarity:
    """The stationarity of the trained head W0 (module doc); ``gz`` (N, E) the per-sample loss
    gradients in z at W0 when already computed."""
    p = problem
    gz = loss_grad_z(p.task, p.train_embeddings(), p.train_labels) if gz is None else gz
    f = p.train_features
    mean = (gz.T @ f).double() / p.n_train  # (E, D): one head pass in the data's precision
    per_sample = norm(gz.double(), dim=1) * norm(f.double(), dim=1)  # (N,)
    return Stationarity(float(norm(mean)), float(per_sample.mean()))


def eigenvalues_above(hess: HeadHessian, damping: float, steps: int) -> dict[str, Any]:
    """The estimated number of eigenvalues of the undamped ``hess`` above ``damping`` (module doc):
    ``count``, ``lanczos_steps`` taken (fewer than ``steps`` when the Krylov space closed, and then
    the count is exact), ``saturated`` (every Ritz value is above the damping: the count is only a lower
    bound), the ``highest`` Ritz value and the first one at or below the damping (``next``; None if none)."""
    steps = max(1, min(int(steps), hess.e * hess.dim))  # the Krylov space has at most E * D dimensions
    spectrum = lanczos(
        hess.with_damping(0.0).matvec,
        (hess.e, hess.dim),
        steps,
        keep=steps,
        dtype=hess.z.dtype,
        device=hess.z.device,
    )
    values = spectrum.values.double()
    above = int((values > damping).sum())
    return {
        "count": above,
        "damping": float(damping),
        "lanczos_steps": spectrum.steps,
        "saturated": above == len(values),
        "highest": spectrum.highest,
        "next": float(values[above]) if above < len(values) else None,
        "estimate": "Ritz values above the damping after lanczos_steps Lanczos steps on the undamped H",
    }
