"""``dataset``: the settings every data set shares, and the base class a data set's settings extend.

A data set is one file plus one YAML: ``conf/dataset/<name>.yaml`` names its settings class with
``_target_`` (e.g. ``eif.data.folders.Cub``), the YAML keys are that class's fields, and its
:meth:`DatasetConfig.load` reads the splits. Which images and labels are read is not part of any
store key directly: :mod:`eif.data.fingerprint` hashes the data actually read instead, so the same
data moved elsewhere is reused and changed data is recomputed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import NonNegativeInt, PositiveInt, model_validator

from eif.data.transforms import TransformsConfig
from eif.settings import DISPLAY, LOCATION, OrAuto, Pluggable, Settings, setting

if TYPE_CHECKING:
    from eif.data.splits import Splits


class BatchConfig(Settings):
    """Class-balanced batches: ``classes_per_batch`` classes x ``samples_per_class`` images; ``auto``
    picks them from the training classes (:func:`eif.data.auto.batch_for`)."""

    classes_per_batch: OrAuto[int] = setting(ge=2)
    samples_per_class: OrAuto[PositiveInt]

    @property
    def size(self) -> int:
        return self.classes_per_batch * self.samples_per_class


class ClassRange(Settings):
    """A half-open range of class ids ``[start, stop)``."""

    start: NonNegativeInt
    stop: NonNegativeInt

    @model_validator(mode="after")
    def _order(self) -> ClassRange:
        if self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be larger than start ({self.start})")
        return self

    def ids(self) -> list[int]:
        return list(range(self.start, self.stop))


ClassIds = tuple[NonNegativeInt, ...] | ClassRange


def class_ids(spec: ClassIds) -> list[int]:
    return spec.ids() if isinstance(spec, ClassRange) else list(spec)


class DatasetConfig(Pluggable):
    """Settings shared by every data set. ``noise_rule``, ``recall_at`` and ``influence_transform``
    are the data set's defaults for ``noise.rule``, ``evaluate.recall_at`` and ``embed.transform``."""

    abstract: ClassVar[bool] = True
    name: str = setting(unkeyed=DISPLAY)
    root: str = setting(unkeyed=LOCATION)
    noise_rule: Literal["shift", "uniform"]
    batch: BatchConfig
    recall_at: tuple[PositiveInt, ...]
    influence_transform: Literal["eval", "influence"]
    transforms: TransformsConfig

    def load(self) -> Splits:
        """The data set's splits (image sets without transforms, clean labels)."""
        raise NotImplementedError
