# pyright: strict
"""Influence of training samples on test-set confusions: mining, EIF and IF on cached head features.

Sign convention for every score here: **positive = harmful** (the training sample makes the test
error worse: for a confusion pair it pulls the pair together), negative = helpful.
"""

from eif.influence.confusion import ConfusionBatch, build_batch
from eif.influence.eif import EifConfig, EifResult, empirical_influence
from eif.influence.ihvp import IfConfig, IfResult, classic_influence
from eif.influence.problem import AttributionProblem
from eif.influence.task import ConfusionTask, normalized_sq_distance

__all__ = [
    "AttributionProblem",
    "ConfusionBatch",
    "ConfusionTask",
    "EifConfig",
    "EifResult",
    "IfConfig",
    "IfResult",
    "build_batch",
    "classic_influence",
    "empirical_influence",
    "normalized_sq_distance",
]
