"""How re-trainings are labelled in the retrain and lds stages' artifacts (no torch: the tables read
these).

A method's re-trainings under the ``sign`` weighting scheme (the paper's) carry the method's name;
under any other scheme ``<method>:<scheme>``. Controls prefix the label: ``random_<label>``; the
statistics add ``net_<label>`` = Δd_label − Δd_random_label. LDS rows name their re-training
protocol (``warm_start``, ``scratch``).
"""

from __future__ import annotations

DEFAULT_SCHEME = "sign"
RANDOM = "random_"
NET = "net_"


def scheme_label(method: str, scheme: str) -> str:
    """The label of ``method``'s re-trainings under a weighting ``scheme``: the method for ``sign``."""
    return method if scheme == DEFAULT_SCHEME else f"{method}:{scheme}"


WARM_START = "warm_start"
"""The LDS protocol of earlier versions (rows without a ``protocol`` are this one)."""
PROTOCOL_TITLES = {WARM_START: "warm-start", "scratch": "from scratch"}


def protocol_title(name: str) -> str:
    """How tables name an LDS re-training protocol (``eif.retrain.protocols``)."""
    return PROTOCOL_TITLES.get(name, name)


def column_title(protocol: str, horizon: int) -> str:
    """An LDS table's column: protocol and horizon, e.g. ``warm-start, 5 epochs``."""
    return f"{protocol_title(protocol)}, {horizon} epoch{'s' if horizon > 1 else ''}"
