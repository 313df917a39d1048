# pyright: strict
"""A batch of K confusions (pairs, groups, mis-similar pairs) in the padded form EIF and IF use.

Confusion k is a set of test pairs over its ``r_k`` distinct test samples (its *members*). Its value
is d_k = mean over its pairs of ``task.measurement``; its *objective* is ``sign_k * d_k``: +1 for
confusions (different classes too close: repairing means pushing apart), -1 for mis-similar pairs
(same class too far). Members are padded to R = max r_k with zero feature rows that no pair uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from eif.influence.task import ConfusionTask
from eif.influence.torch_typed import from_numpy
from eif.utils.errors import require


@dataclass(frozen=True)
class ConfusionBatch:
    """``members`` (K, R) int64 test indices, ``valid`` (K, R) bool, ``pair_a``/``pair_b`` (K, P) int64
    positions into ``members``, ``weight`` (K, P) (1/n_k on real pairs, 0 on padding), ``sign`` (K,)."""

    members: torch.Tensor
    valid: torch.Tensor
    pair_a: torch.Tensor
    pair_b: torch.Tensor
    weight: torch.Tensor
    sign: torch.Tensor

    def __len__(self) -> int:
        return int(self.members.shape[0])

    def select(self, rows: slice) -> ConfusionBatch:
        """Confusions ``rows``, trimmed to their own maximal r and pair count."""
        valid = self.valid[rows]
        r = int(valid.sum(1).max())
        p = int((self.weight[rows] > 0).sum(1).max())
        return ConfusionBatch(
            self.members[rows, :r],
            valid[:, :r],
            self.pair_a[rows, :p],
            self.pair_b[rows, :p],
            self.weight[rows, :p],
            self.sign[rows],
        )

    def features(self, test_features: torch.Tensor) -> torch.Tensor:
        """Member features F_p (K, R, D), zero on padding."""
        return test_features[self.members] * self.valid.unsqueeze(-1).to(test_features.dtype)


def build_batch(
    pairs: list[np.ndarray], sign: float | list[float] = 1.0, dtype: torch.dtype = torch.float32
) -> ConfusionBatch:
    """A batch from K arrays of test-index pairs, each (n_k, 2) with n_k >= 1."""
    require(len(pairs) > 0, "no confusions to analyse")
    k = len(pairs)
    signs = np.broadcast_to(np.asarray(sign, dtype=np.float64), (k,))
    uniq: list[npt.NDArray[np.int64]] = []
    inv: list[npt.NDArray[np.intp]] = []
    for part in pairs:
        p = np.reshape(np.asarray(part, dtype=np.int64), (-1, 2))
        require(len(p) > 0, "every confusion needs at least one pair")
        u, i = np.unique(p, return_inverse=True)
        uniq.append(u)
        inv.append(np.reshape(i, (-1, 2)))
    r = max(len(u) for u in uniq)
    n = max(len(i) for i in inv)
    members = np.zeros((k, r), np.int64)
    valid = np.zeros((k, r), bool)
    pa = np.zeros((k, n), np.int64)
    pb = np.zeros((k, n), np.int64)
    w = np.zeros((k, n), np.float64)
    for j, (u, i) in enumerate(zip(uniq, inv)):
        members[j, : len(u)] = u
        members[j, len(u) :] = u[0]
        valid[j, : len(u)] = True
        pa[j, : len(i)], pb[j, : len(i)] = i[:, 0], i[:, 1]
        w[j, : len(i)] = 1.0 / len(i)
    t = from_numpy
    return ConfusionBatch(t(members), t(valid), t(pa), t(pb), t(w).to(dtype), t(np.array(signs)).to(dtype))


def confusion_distance(task: ConfusionTask, z: torch.Tensor, batch: ConfusionBatch) -> torch.Tensor:
    """d_k for member embeddings z (K, R, E) -> (K,) (mean of the measurement over k's pairs)."""
    rows = torch.arange(z.shape[0], device=z.device).unsqueeze(1)
    m = task.measurement(z[rows, batch.pair_a], z[rows, batch.pair_b])
    return (m * batch.weight).sum(-1)


def distance_and_grad(
    task: ConfusionTask, z: torch.Tensor, batch: ConfusionBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d (K,), G = dd/dz (K, R, E)). With z = F_p W^T + b, grad_W d_k = G_k^T F_p,k (rank <= r_k)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        d = confusion_distance(task, z, batch)
        (g,) = torch.autograd.grad(d.sum(), z)
    return d.detach(), g
