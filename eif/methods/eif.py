"""``methods=[eif]``: the empirical influence function (paper Eq. 5-6; docs/protocol.md, "EIF").

The computation lives in :mod:`eif.influence.eif`; this file makes it a method.
"""

from __future__ import annotations

from eif.influence.confusion import ConfusionBatch
from eif.influence.eif import EifConfig, empirical_influence
from eif.methods.base import AttributionProblem, MethodConfig, MethodResult


class Eif(EifConfig, MethodConfig):
    """EIF: theta_max by gradient ascent on the confusion, score = dL_i * dd (see :class:`EifConfig`)."""

    def score(
        self, problem: AttributionProblem, batch: ConfusionBatch, progress: bool = False
    ) -> MethodResult:
        r = empirical_influence(problem, batch, self, progress)
        arrays = {"d_theta": r.d_theta, "delta_d": r.delta_d, "theta_norm": r.theta_norm, "steps": r.steps}
        return MethodResult(r.scores, r.d0, arrays, {"median_steps": float(r.steps[:, 0].float().median())})
