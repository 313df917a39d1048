"""How re-trainings are labelled in the retrain stage's artifacts (no torch: the tables read these).

A method's re-trainings under the ``sign`` weighting scheme (the paper's) carry the method's name;
under any other scheme ``<method>:<scheme>``. Controls prefix the label: ``random_<label>``; the
statistics add ``net_<label>`` = Δd_label − Δd_random_label.
"""

from __future__ import annotations

DEFAULT_SCHEME = "sign"
RANDOM = "random_"
NET = "net_"


def scheme_label(method: str, scheme: str) -> str:
    """The label of ``method``'s re-trainings under a weighting ``scheme``: the method for ``sign``."""
    return method if scheme == DEFAULT_SCHEME else f"{method}:{scheme}"
