"""Data sets (fashion_mnist, cub, cars, inshop, imagefolder, dataframe, features), noise, transforms,
the sampler."""

from eif.data.base import ArrayImageSet, DataBundle, FileImageSet, ImageSet, NoiseInfo
from eif.data.build import build_data
from eif.data.noise import inject_noise
from eif.data.samplers import BalancedBatchSampler
from eif.data.transforms import build_transform

__all__ = [
    "ArrayImageSet",
    "BalancedBatchSampler",
    "DataBundle",
    "FileImageSet",
    "ImageSet",
    "NoiseInfo",
    "build_data",
    "build_transform",
    "inject_noise",
]
