"""The tiny frozen-feature cache: 120 deterministic 8x8 images in 10 shards, encoded by a fixed random linear map.

Every 37th image does not decode, nor does any of shard 3 (a shard of zero rows).  ``build`` builds (or reads) it
as a run does; the feature cache's fault, lock and failed-write tests build it.
"""

import os

import numpy as np
import torch
from PIL import Image

from egg.zoo.discriminative_captioner.data.feature_cache import CacheKey
from egg.zoo.discriminative_captioner.data.feature_cache_build import build_cache
from egg.zoo.discriminative_captioner.data.splits import ImageSplit

N_IMAGES, SHARD_SIZE, BATCH_SIZE = 120, 12, 6  # 10 shards of 2 batches
PIXELS = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 8, 8, 3), dtype=np.uint8)


class TinyImages:
    """Deterministic 8x8 images; every 37th does not decode, nor does any of shard 3 (a shard of zero rows)."""

    def __len__(self):
        return N_IMAGES

    def __getitem__(self, index):
        if index % 37 == 5 or 3 * SHARD_SIZE <= index < 4 * SHARD_SIZE:
            raise OSError(f"image {index} is broken")
        return Image.fromarray(PIXELS[index])


def to_pixels(image):
    return torch.from_numpy(np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32)).permute(2, 0, 1) / 255


PROJECTION = torch.from_numpy(np.random.default_rng(0).standard_normal((3 * 8 * 8, 16)).astype(np.float32))


def linear_encoder(pixels):
    """A fixed random linear map of the pixels: ``[b, 3, 8, 8] -> [b, 16]``."""
    return pixels.reshape(len(pixels), -1) @ PROJECTION


SPLIT = ImageSplit("train", TinyImages(), [["an image"]] * N_IMAGES, ids=[f"img{i}" for i in range(N_IMAGES)])
KEY = CacheKey.of(SPLIT, "linear", "to_pixels 8", shard_size=SHARD_SIZE)
OTHER_KEY = CacheKey.of(SPLIT, "another-linear", "to_pixels 8", shard_size=SHARD_SIZE)


def build(directory, key=KEY, rebuild=False):
    return build_cache(directory, SPLIT, linear_encoder, to_pixels, key, batch_size=BATCH_SIZE, rebuild=rebuild)


def files_of(directory):
    """``{name: bytes}`` of every file in a cache directory."""
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}
