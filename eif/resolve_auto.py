"""The job with its ``auto`` settings picked from the data (the job layer's half of ``auto``).

:func:`resolve_job` replaces every ``auto`` of the validated job by the value :mod:`eif.data.auto`
picks from the data, logs what it picked, and returns the resolved job. The new ``dataset`` and
``model`` settings are validated by their own classes; the rest of the job was validated once by
:func:`eif.config.load_job` and is kept as it is. The caller (:class:`eif.pipeline.Env`) runs the
stages' checks again on the resolved job (:func:`eif.config.check_job`).
"""

from __future__ import annotations

import logging
from typing import Any

from eif.config import JobConfig
from eif.data.auto import DataAccess, batch_for, resolve_transforms
from eif.data.config import DatasetConfig
from eif.data.features import FeatureSet, FeatureTransforms
from eif.settings import AUTO, accepts_auto, has_auto, parse
from eif.utils.errors import EifError

log = logging.getLogger(__name__)


def resolve_job(job: JobConfig, data: DataAccess) -> tuple[JobConfig, dict[str, Any]]:
    """``job`` with every ``auto`` resolved from ``data`` (``job`` itself when it has none), and
    ``{config path: picked value}``."""
    ds, model = job.dataset, job.model
    features = isinstance(ds.transforms, FeatureTransforms)
    if features and not model.takes_features:
        raise EifError(f"dataset={ds.name} holds feature vectors, not images: use model=features_head")
    if model.takes_features and not features:
        raise EifError(
            f"model={model.name} takes precomputed feature vectors (dataset=features), not the images of "
            f"dataset={ds.name}"
        )
    if not has_auto(ds) and not model.needs_resolving():
        return job, {}
    updates: dict[str, Any] = {}
    if has_auto(ds.transforms):
        updates["transforms"] = resolve_transforms(ds.transforms, model.pretrained, data.splits, data)
    if has_auto(ds.batch):
        updates["batch"] = batch_for(ds.batch, data.splits.train.clean_labels)
    fields = {name: getattr(ds, name) for name in type(ds).model_fields}
    new_ds = parse(type(ds), {**fields, **updates}, "dataset") if updates else ds
    # the data is read only when a setting depends on it (a sweep with stages=[] reads nothing)
    new_model = model.resolve(_channels(new_ds, data), data.file_digest) if model.needs_resolving() else model
    resolved = job.model_copy(update={"dataset": new_ds, "model": new_model})
    picked = {
        **{f"dataset.{k}": v for k, v in _picked(ds, new_ds).items()},
        **{f"model.{k}": v for k, v in _picked(model, new_model).items()},
    }
    if picked and (updates or features):  # the data was read: show what was found
        names = data.splits.train_class_names
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        log.info(
            "%s: %d training %s of %d classes (%s); auto settings: %s",
            ds.name,
            len(data.splits.train),
            "vectors" if features else "images",
            len(names),
            shown,
            _shown(picked),
        )
    elif picked:
        log.info("%s: auto settings: %s", ds.name, _shown(picked))
    return resolved, picked


def _channels(ds: DatasetConfig, data: DataAccess) -> int:
    """The model's input channels: the transforms' image channels, or the size D of feature vectors."""
    channels = ds.transforms.channels
    if channels is not None:
        return channels
    train = data.splits.train  # the data is read only here, when a setting depends on it
    if not isinstance(train, FeatureSet):
        raise EifError(f"dataset={ds.name}: its transforms give no channel count and it holds no vectors")
    return int(train.features.shape[1])


def _picked(before: Any, after: Any, prefix: str = "") -> dict[str, Any]:
    """``{path: value in after}`` of every field that is ``auto`` in ``before`` (JSON-able values)."""
    out: dict[str, Any] = {}
    cls = type(before)
    for name in cls.model_fields:
        old, new = getattr(before, name), getattr(after, name)
        if accepts_auto(cls, name) and old == AUTO:
            out[prefix + name] = new.model_dump(mode="json") if hasattr(new, "model_dump") else _plain(new)
        elif hasattr(old, "model_fields") and has_auto(old):
            out.update(_picked(old, new, f"{prefix}{name}."))
    return out


def _shown(picked: dict[str, Any]) -> str:
    return "; ".join(f"{k}={_show(v)}" for k, v in picked.items())


def _show(value: Any) -> str:
    """A picked value for the log: a transform step as ``name(field=value, ...)``."""
    if isinstance(value, dict):
        fields = ", ".join(f"{k}={v}" for k, v in value.items() if k not in ("name", "ratio"))
        return f"{value['name']}({fields})"
    return str(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
