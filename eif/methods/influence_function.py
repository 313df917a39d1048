"""``methods=[if]`` and its variants: the classic influence function (paper Eq. 4; docs/protocol.md, "IF").

One class, several YAMLs: ``conf/methods/if.yaml`` is the reference's LiSSA (scale 500, damping 0.01:
the system it converges to has lambda = 5, and one pass rarely gets there), ``if_converged.yaml`` the
same system solved to a relative residual of 1e-3, ``if_converged_low.yaml`` a smaller damping.
"""

from __future__ import annotations

from typing import Any

from eif.influence.confusion import ConfusionBatch
from eif.influence.ihvp import IfConfig, classic_influence, if_diagnostics
from eif.methods.base import AttributionProblem, MethodConfig, MethodResult


class InfluenceFunction(IfConfig, MethodConfig):
    """IF: score_i = grad_W obj^T (H + lambda I)^-1 grad_W L_i (positive = harmful; see :class:`IfConfig`)."""

    def score(
        self, problem: AttributionProblem, batch: ConfusionBatch, progress: bool = False
    ) -> MethodResult:
        r = classic_influence(problem, batch, self, progress)
        info = {**r.info, "scale": r.scale if r.scale == r.scale else None, "tolerance": self.warn_residual}
        return MethodResult(r.scores, r.d0, {"iterations": r.iterations, "residual": r.residual}, info)

    def diagnose(self, problem: AttributionProblem) -> dict[str, Any]:
        """``eigenvalues_above_damping`` of H (:func:`eif.influence.ihvp.if_diagnostics`)."""
        return if_diagnostics(problem, self)
