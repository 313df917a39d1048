"""Label noise for the training split.

``shift`` is the reference code's rule (docs/protocol.md, Label noise): after ``np.random.seed(seed)``,
``idx = np.random.choice(N, int(fraction * N), replace=False)`` and each chosen label ``y`` becomes
``y + 5``, or ``y - 5`` when ``y + 5`` exceeds the largest class. ``np.random.RandomState(seed)``
draws the same stream without touching NumPy's global state. ``uniform`` picks the subset the
same way and moves each chosen label to another training class, uniformly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from eif.settings import DISPLAY, Settings, setting
from eif.utils.errors import EifError

RULES = ("shift", "uniform")
SHIFT = 5


class NoiseConfig(Settings):
    """``noise``: mislabel ``fraction`` of the training samples (a seeded subset) by ``rule``."""

    name: str = setting("custom", unkeyed=DISPLAY)
    fraction: float = setting(ge=0.0, lt=0.5)
    rule: Literal["shift", "uniform"]


def inject_noise(
    labels: np.ndarray, fraction: float, rule: str, seed: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mislabel ``int(fraction * N)`` seeded samples of ``labels`` (int (N,), values in ``0..C-1``).

    Returns ``(noisy_labels, flipped)``: int64 (N,) and the ascending int64 indices that changed.
    Every flipped label differs from the clean one.
    """
    labels = np.asarray(labels, dtype=np.int64)
    fraction = float(fraction)
    if not 0.0 <= fraction < 0.5:
        raise EifError(f"noise.fraction must be in [0, 0.5), got {fraction}")
    if rule not in RULES:
        raise EifError(f"noise.rule must be one of {', '.join(RULES)}, got {rule!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise EifError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    # y + 5 > C - 1 happens for y >= C - 5, and then y - 5 >= 0 needs C - 5 >= 5.
    if rule == "shift" and fraction > 0 and num_classes < 2 * SHIFT:
        raise EifError(
            f"noise rule 'shift' (+/-{SHIFT} classes) needs at least {2 * SHIFT} training "
            f"classes, got {num_classes}; use noise.rule=uniform"
        )
    if rule == "uniform" and fraction > 0 and num_classes < 2:
        raise EifError(f"noise rule 'uniform' needs at least 2 training classes, got {num_classes}")
    n = labels.shape[0]
    k = int(fraction * n)
    rs = np.random.RandomState(seed % 2**32)
    idx = rs.choice(n, k, replace=False) if k > 0 else np.zeros(0, dtype=np.int64)
    noisy = labels.copy()
    y = labels[idx]
    if rule == "shift":
        noisy[idx] = np.where(y + SHIFT > num_classes - 1, y - SHIFT, y + SHIFT)
    else:
        noisy[idx] = (y + rs.randint(1, num_classes, size=k)) % num_classes
    return noisy, np.sort(idx).astype(np.int64)
