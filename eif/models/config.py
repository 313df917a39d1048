"""``model``: the settings every embedding model shares; a model is one file plus one YAML.

``conf/model/<name>.yaml`` names the settings class with ``_target_`` (e.g.
``eif.models.small_cnn.SmallCnn``); its :meth:`ModelConfig.build` makes the :class:`Embedder`.
``in_channels`` and ``feature_dim`` may be ``auto``: :meth:`ModelConfig.resolve` replaces them by the
data's channels and the trunk's output size when a job runs (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pydantic import PositiveInt

from eif.models.embedder import Embedder
from eif.settings import AUTO, DISPLAY, LOCATION, OrAuto, Pluggable, Settings, has_auto, parse, setting
from eif.utils.errors import EifError


class ReferenceCheckpoint(Settings):
    """The reference code's released files: a DataParallel ``state_dict`` and a ``proxy.pth``."""

    weights: str
    proxies: str


class ModelConfig(Pluggable):
    """Trunk -> global max pool -> LayerNorm(feature_dim, no affine) -> head Linear(feature_dim -> E).

    ``checkpoint``: start from trained weights instead of training (an eif ``model.pt``, or the
    reference's files); its content, not its path, is part of the train stage's key."""

    abstract: ClassVar[bool] = True
    # False for models whose trunk has no parameters (precomputed features): no warm-up needed.
    trunk_trains: ClassVar[bool] = True
    # True for models that take precomputed feature vectors (dataset=features) instead of images.
    takes_features: ClassVar[bool] = False
    name: str = setting(unkeyed=DISPLAY)
    in_channels: OrAuto[PositiveInt]
    feature_dim: OrAuto[PositiveInt]
    embedding_size: PositiveInt
    pretrained: bool = False
    checkpoint: str | ReferenceCheckpoint | None = setting(None, unkeyed=LOCATION)

    def build(self, pretrained: bool | None = None) -> Embedder:
        """A freshly initialised model; ``pretrained`` overrides the setting (False: no weight download)."""
        raise NotImplementedError

    def weights_problem(self) -> str | None:
        """Why ``pretrained`` weights cannot be loaded here (one line), or None when they can."""
        return None

    def needs_resolving(self) -> bool:
        """Whether :meth:`resolve` has anything to do (an ``auto`` setting)."""
        return has_auto(self)

    def native_feature_dim(self, in_channels: int) -> int | None:
        """The size D of the trunk's output for ``in_channels`` input channels; None when D is a
        free setting of the model (``feature_dim: auto`` is then an error)."""
        return None

    def resolve(self, in_channels: int, file_digest: Callable[[str], str]) -> ModelConfig:
        """These settings with ``auto`` replaced: ``in_channels`` by the data's ``in_channels``,
        ``feature_dim`` by :meth:`native_feature_dim`. ``file_digest`` hashes files the model reads."""
        fields = self.dump()
        if self.in_channels == AUTO:
            fields["in_channels"] = in_channels
        if self.feature_dim == AUTO:
            dim = self.native_feature_dim(int(fields["in_channels"]))
            if dim is None:
                raise EifError(
                    f"model.feature_dim=auto: {self.name} has no fixed feature size; set model.feature_dim"
                )
            fields["feature_dim"] = dim
        return parse(ModelConfig, fields, "model")
