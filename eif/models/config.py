"""``model``: the settings every embedding model shares; a model is one file plus one YAML.

``conf/model/<name>.yaml`` names the settings class with ``_target_`` (e.g.
``eif.models.small_cnn.SmallCnn``); its :meth:`ModelConfig.build` makes the :class:`Embedder`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import PositiveInt

from eif.models.embedder import Embedder
from eif.settings import DISPLAY, LOCATION, Pluggable, Settings, setting


class ReferenceCheckpoint(Settings):
    """The reference code's released files: a DataParallel ``state_dict`` and a ``proxy.pth``."""

    weights: str
    proxies: str


class ModelConfig(Pluggable):
    """Trunk -> global max pool -> LayerNorm(feature_dim, no affine) -> head Linear(feature_dim -> E).

    ``checkpoint``: start from trained weights instead of training (an eif ``model.pt``, or the
    reference's files); its content, not its path, is part of the train stage's key."""

    abstract: ClassVar[bool] = True
    name: str = setting(unkeyed=DISPLAY)
    in_channels: PositiveInt
    feature_dim: PositiveInt
    embedding_size: PositiveInt
    pretrained: bool = False
    checkpoint: str | ReferenceCheckpoint | None = setting(None, unkeyed=LOCATION)

    def build(self, pretrained: bool | None = None) -> Embedder:
        """A freshly initialised model; ``pretrained`` overrides the setting (False: no weight download)."""
        raise NotImplementedError

    def weights_problem(self) -> str | None:
        """Why ``pretrained`` weights cannot be loaded here (one line), or None when they can."""
        return None
