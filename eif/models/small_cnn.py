"""A small CNN trunk for 28x28 grayscale images (Fashion-MNIST), cheap enough to train on a CPU."""

from __future__ import annotations

from torch import nn

from eif.models.embedder import Embedder


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn_trunk(in_channels: int = 1, feature_dim: int = 256, width: int = 16) -> nn.Sequential:
    """(B, in_channels, 28, 28) -> (B, feature_dim, 3, 3): four 3x3 conv-BN-ReLU blocks, three 2x2 max pools.

    Widths are ``width``, 2x, 4x, then ``feature_dim``; about 3 M multiply-adds per 28x28 image.
    """
    return nn.Sequential(
        *_block(in_channels, width),
        nn.MaxPool2d(2),  # 28 -> 14
        *_block(width, 2 * width),
        nn.MaxPool2d(2),  # 14 -> 7
        *_block(2 * width, 4 * width),
        nn.MaxPool2d(2),  # 7 -> 3
        *_block(4 * width, feature_dim),
    )


def build_small_cnn(in_channels: int = 1, feature_dim: int = 256, embedding_size: int = 64) -> Embedder:
    """Small CNN trunk, max pool, LayerNorm(feature_dim, no affine), Linear(feature_dim -> embedding_size)."""
    return Embedder(small_cnn_trunk(in_channels, feature_dim), feature_dim, embedding_size)
