"""The reference code's class-balanced batch sampler, as a pure function of ``(seed, epoch)``.

Per epoch (docs/protocol.md, "Training", batches): every class's index list is shuffled; each batch picks
``classes_per_batch`` distinct classes uniformly without replacement and takes the next
``samples_per_class`` indices of each picked class's list; a class list is reshuffled (and its cursor
reset) as soon as the next take would overflow it. Batches are yielded while ``count + batch_size <
N``, so an epoch has ``(N - 1) // batch_size`` batches.

Differences from the reference, on purpose:

- The reference keeps its shuffled lists and cursors across epochs and draws from NumPy's global
  RNG; here every epoch starts afresh from ``default_rng(derive_seed(seed, epoch))``, so any epoch
  (and, with ``start_batch``, any batch) can be regenerated alone when a run resumes.
- A class with fewer than ``samples_per_class`` images makes the reference yield a short slice
  (all of that class's images once), so such batches are smaller. Here the take wraps around the
  class's shuffled list (``perm[arange(m) % n_c]``), repeating images so every batch has exactly
  ``classes_per_batch * samples_per_class`` entries. This matters for InShop (many items have 1-2
  images, 3 per class are taken); CUB and Cars have no class that small.

Each batch is a list of ``(index, aug_seed)``; the augmentation seeds of batch ``b`` are drawn from
``derive_seed(seed, epoch, b, 1)`` so they depend only on ``(seed, epoch, b)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from eif.utils.errors import EifError
from eif.utils.seed import derive_seed

# Tags the augmentation streams, derive_seed(seed, epoch, batch, _AUG_TAG), apart from the sampler's
# own derive_seed(seed, epoch).
_AUG_TAG = 1


class BalancedBatchSampler:
    """Batches of ``classes_per_batch`` classes x ``samples_per_class`` images for one epoch.

    ``labels``: int (N,) training labels (the noisy ones when noise was injected). Iterating yields
    the batches ``start_batch, start_batch + 1, ...`` of the epoch, each a list of ``(index,
    aug_seed)`` Python ints. ``num_batches`` is the number of batches in the whole epoch; ``len()``
    is the number this sampler yields, ``num_batches - start_batch`` (as DataLoader expects).
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        seed: int,
        epoch: int,
        start_batch: int = 0,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.classes_per_batch = int(classes_per_batch)
        self.samples_per_class = int(samples_per_class)
        self.seed, self.epoch, self.start_batch = int(seed), int(epoch), int(start_batch)
        self.batch_size = self.classes_per_batch * self.samples_per_class
        if self.classes_per_batch < 1 or self.samples_per_class < 1:
            raise EifError(
                f"batch needs classes_per_batch >= 1 and samples_per_class >= 1, got "
                f"{classes_per_batch} x {samples_per_class}"
            )
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        if classes.size < self.classes_per_batch:
            raise EifError(
                f"the training set has {classes.size} classes, fewer than "
                f"classes_per_batch={self.classes_per_batch}"
            )
        self.num_batches = max((labels.shape[0] - 1) // self.batch_size, 0)
        if self.num_batches == 0:
            raise EifError(
                f"the training set has {labels.shape[0]} images, too few for one batch of "
                f"{self.batch_size} (an epoch ends when count + batch size >= N)"
            )
        if not 0 <= self.start_batch <= self.num_batches:
            raise EifError(f"start_batch must be in [0, {self.num_batches}], got {start_batch}")
        self._members = [order[s : s + c] for s, c in zip(starts, counts)]

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def epoch_indices(self) -> np.ndarray:
        """int64 (num_batches, batch_size): the image indices of every batch of the epoch."""
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch))
        m = self.samples_per_class
        # The per-class cursors make this inherently sequential; the work is O(batches x classes).
        lists = [rng.permutation(members) for members in self._members]
        cursor = np.zeros(len(lists), dtype=np.int64)
        out = np.empty((self.num_batches, self.batch_size), dtype=np.int64)
        for b in range(self.num_batches):
            chosen = rng.choice(len(lists), self.classes_per_batch, replace=False)
            for j, c in enumerate(chosen):
                lst = lists[c]
                take = lst[(cursor[c] + np.arange(m)) % lst.shape[0]]
                out[b, j * m : (j + 1) * m] = take
                cursor[c] += m
                if cursor[c] + m > lst.shape[0]:
                    rng.shuffle(lst)
                    cursor[c] = 0
        return out

    def aug_seeds(self, batch: int) -> np.ndarray:
        """int64 (batch_size,): augmentation seeds of batch ``batch``, from ``(seed, epoch, batch)`` only."""
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch, batch, _AUG_TAG))
        return rng.integers(0, 2**63 - 1, size=self.batch_size, dtype=np.int64)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self.epoch_indices()
        for b in range(self.start_batch, self.num_batches):
            yield list(zip(indices[b].tolist(), self.aug_seeds(b).tolist()))
