"""Seeding. A run's seed fixes data order, augmentations, label noise and initialisation."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends deterministically on ``parts`` (e.g. run seed, epoch, batch).

    The number of parts is mixed in, so ``derive_seed(7)`` and ``derive_seed(7, 0)`` differ.
    """
    entropy = [len(parts)] + [int(p) % 2**32 for p in parts]
    return int(
        np.random.SeedSequence(entropy).generate_state(2, np.uint32).astype(np.uint64)
        @ np.array([1, 2**32], dtype=np.uint64)
    ) & (2**63 - 1)
