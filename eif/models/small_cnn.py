"""A small CNN trunk for small grayscale images (Fashion-MNIST), cheap enough to train on a CPU."""

from __future__ import annotations

from pydantic import PositiveInt, model_validator
from torch import nn

from eif.models.config import ModelConfig
from eif.models.embedder import Embedder
from eif.settings import DISPLAY, setting


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn_trunk(in_channels: int = 1, feature_dim: int = 256, width: int = 16) -> nn.Sequential:
    """(B, in_channels, H, W) -> (B, feature_dim, H/8, W/8): four 3x3 conv-BN-ReLU blocks, three 2x2
    max pools (images need at least 8x8 pixels). Widths are ``width``, 2x, 4x, then ``feature_dim``;
    about 3 M multiply-adds per 28x28 image."""
    return nn.Sequential(
        *_block(in_channels, width),
        nn.MaxPool2d(2),  # 28 -> 14
        *_block(width, 2 * width),
        nn.MaxPool2d(2),  # 14 -> 7
        *_block(2 * width, 4 * width),
        nn.MaxPool2d(2),  # 7 -> 3
        *_block(4 * width, feature_dim),
    )


def build_small_cnn(
    in_channels: int = 1, feature_dim: int = 256, embedding_size: int = 64, width: int = 16
) -> Embedder:
    """Small CNN trunk, max pool, LayerNorm(feature_dim, no affine), Linear(feature_dim -> embedding_size)."""
    return Embedder(small_cnn_trunk(in_channels, feature_dim, width), feature_dim, embedding_size)


class SmallCnn(ModelConfig):
    """``model=small_cnn``: :func:`small_cnn_trunk`, first-block ``width``; no pretrained weights exist."""

    name: str = setting("small_cnn", unkeyed=DISPLAY)
    width: PositiveInt = 16

    @model_validator(mode="after")
    def _no_weights(self) -> SmallCnn:
        if self.pretrained:
            raise ValueError("pretrained=true is not available for small_cnn (no weights exist)")
        return self

    def build(self, pretrained: bool | None = None) -> Embedder:
        return build_small_cnn(self.in_channels, self.feature_dim, self.embedding_size, self.width)
