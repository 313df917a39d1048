"""Config validation: bad values fail fast with one readable line, before any work starts."""

from __future__ import annotations

from omegaconf import DictConfig

from eif.utils.errors import EifError, require


def validate(cfg: DictConfig) -> None:
    """Check values that would otherwise fail late or silently; raise :class:`EifError`."""
    frac = float(cfg.noise.fraction)
    require(0.0 <= frac < 0.5, f"noise.fraction must be in [0, 0.5), got {frac}")
    require(
        cfg.noise.rule in ("shift", "uniform"), f"noise.rule must be shift or uniform, got {cfg.noise.rule!r}"
    )
    require(int(cfg.train.epochs) >= 1, f"train.epochs must be >= 1, got {cfg.train.epochs}")
    require(
        0 <= int(cfg.train.warmup_epochs) <= int(cfg.train.epochs),
        f"train.warmup_epochs must be in [0, train.epochs], got {cfg.train.warmup_epochs}",
    )
    b = cfg.dataset.batch
    require(
        int(b.classes_per_batch) >= 2 and int(b.samples_per_class) >= 1,
        "dataset.batch needs classes_per_batch >= 2 and samples_per_class >= 1, got "
        f"{b.classes_per_batch} x {b.samples_per_class}",
    )
    stages = cfg.stages
    if isinstance(stages, str) or not all(isinstance(s, str) for s in stages):
        raise EifError(f"stages must be a list of stage names, e.g. stages=[train,evaluate], got {stages!r}")
