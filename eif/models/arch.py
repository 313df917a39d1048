"""The settings shared by trunks picked by architecture name (``model=torchvision``, ``model=timm``).

``arch`` names the network in its library; ``weights`` is null (random init) or where its weights come
from (each library's subclass says which forms it takes); ``pretrained`` follows ``weights``.
``weights_digest`` is the content hash of a local weights file, filled in when the job runs, so an
edited file trains a new model. ``feature_dim`` is read from the architecture (``auto``; a number
that disagrees is an error).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from eif.models.config import ModelConfig
from eif.settings import AUTO
from eif.utils.errors import EifError


class ArchTrunk(ModelConfig):
    """A library network by name as the trunk; subclasses give the names, the network and the weights."""

    abstract: ClassVar[bool] = True
    provider: ClassVar[str] = ""  # shown in errors, e.g. "torchvision classification"
    arch: str = "resnet18"
    weights: str | None = None
    weights_digest: str | None = None

    @classmethod
    def arch_names(cls) -> list[str]:
        """Every architecture name the library knows."""
        raise NotImplementedError

    def weights_file(self) -> str | None:
        """The local weights file that ``weights`` names (hashed into the key), or None."""
        return self.weights

    @model_validator(mode="before")
    @classmethod
    def _pretrained_from_weights(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = data.get("pretrained")
            if given is not None and bool(given) != (data.get("weights") is not None):
                raise ValueError("pretrained follows weights: set model.weights (null: random init)")
            data = {**data, "pretrained": data.get("weights") is not None}
        return data

    @field_validator("arch")
    @classmethod
    def _known(cls, arch: str) -> str:
        names = cls.arch_names()
        if arch not in names:
            close = difflib.get_close_matches(arch, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{arch!r} is not a {cls.provider} model{hint}")
        return arch

    @model_validator(mode="after")
    def _channels(self) -> ArchTrunk:
        if self.pretrained and self.in_channels not in (3, AUTO):
            raise ValueError(f"weights need in_channels=3 (ImageNet images), got {self.in_channels}")
        return self

    def needs_resolving(self) -> bool:
        return True  # feature_dim is checked against the architecture, a weights file is hashed

    def resolve(self, in_channels: int, file_digest: Callable[[str], str]) -> ModelConfig:
        native = self.native_feature_dim(in_channels)
        if self.feature_dim not in (AUTO, native):
            raise EifError(
                f"model.feature_dim={self.feature_dim}, but {self.arch}'s trunk gives {native} (use auto)"
            )
        out = super().resolve(in_channels, file_digest)
        file = self.weights_file()
        if file is not None:
            if not Path(file).is_file():
                raise EifError(self.weights_problem() or f"model.weights: {file} is not a file")
            out = out.model_copy(update={"weights_digest": file_digest(file)})
        return out
