"""The frozen-feature cache: each image of a split encoded once by a frozen encoder, kept as fp16 shards on disk.

One cache directory per (data set, split, encoder role) holds

    features-00000.npy, ...   fp16 ``[rows, D]`` arrays of ``shard_size`` images each, read by memory mapping
    unreadable-00000.json     the indices (in the split) of that shard's images that could not be decoded
    ids.txt, sources.txt      the split's image ids and source files, one per line
    building.json             the key the shards are being built for
    manifest.json             written last: the key, the shard list, D, the unreadable images

The key is the encoder's model name, its preprocessing, and hashes of the image ids and of the source list: a
cache whose manifest records another key is *stale* and rebuilt.  A build that stops halfway (a killed job)
resumes at the first missing shard, provided ``building.json`` records the same key.  Broken images are
counted as unreadable in the build, so a run with a matching cache never decodes an image.
"""

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import List

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..checkpointing import atomic_path, atomic_write_text
from ..errors import UsageError
from .images import IMAGE_ERRORS

FORMAT_VERSION = 1
SHARD_SIZE = 10_000


def _digest(lines):
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything the cached features depend on."""

    model: str  # the encoder's model name or file
    preprocessing: str  # the image transform, as its repr
    n_images: int
    ids_sha256: str
    sources_sha256: str
    shard_size: int = SHARD_SIZE
    format_version: int = FORMAT_VERSION

    @classmethod
    def of(cls, split, model, preprocessing, shard_size=SHARD_SIZE):
        return cls(str(model), str(preprocessing), len(split), _digest(split.ids), _digest(split.sources), shard_size)


def cache_directory(root, dataset, split, role):
    """``<root>/<dataset>/<split>/<role>`` (role: "captioner" or "retriever")."""
    return os.path.join(root, dataset, split, role)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cache_status(directory, key):
    """``"ok"``, ``"missing"``, ``"partial"`` (a build to resume) or ``"stale: <what differs>"``."""
    manifest = _read_json(os.path.join(directory, "manifest.json"))
    if manifest is None:
        building = _read_json(os.path.join(directory, "building.json"))
        if building == asdict(key):
            return "partial"
        return "missing" if building is None else "stale: " + _difference(building, asdict(key))
    if manifest.get("key") != asdict(key):
        return "stale: " + _difference(manifest.get("key") or {}, asdict(key))
    shards = [os.path.join(directory, name) for name in manifest.get("shards", [])]
    if not all(os.path.isfile(path) for path in shards):
        return "stale: shard files are missing"
    return "ok"


def _difference(recorded, wanted):
    fields = [name for name in wanted if recorded.get(name) != wanted[name]]
    return ", ".join(f"{name} differs" for name in fields) or "unreadable record"


class FeatureCache:
    """A built cache, read by memory mapping: ``cache[i]`` is image i's features (fp32 ``[D]``), ``cache[a:b]``
    or ``cache.rows(indices)`` several of them (``[n, D]``)."""

    def __init__(self, directory):
        self.directory = directory
        self.manifest = _read_json(os.path.join(directory, "manifest.json"))
        if self.manifest is None:
            raise UsageError(f"feature cache {directory} has no readable manifest; rerun with --rebuild")
        self.shard_size = self.manifest["key"]["shard_size"]
        try:
            self.shards = [np.load(os.path.join(directory, name), mmap_mode="r") for name in self.manifest["shards"]]
        except (OSError, ValueError) as error:
            raise UsageError(f"feature cache {directory} is corrupted ({error}); rerun with --rebuild")
        self.unreadable = set(self.manifest["unreadable"])
        self.dim = self.manifest["dim"]

    def __len__(self):
        return self.manifest["key"]["n_images"]

    def rows(self, indices):
        """Features ``[n, D]`` (fp32) of the images at ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=np.float32)
        for shard in np.unique(indices // self.shard_size):
            where = indices // self.shard_size == shard
            out[where] = self.shards[shard][indices[where] - shard * self.shard_size]
        return torch.from_numpy(out)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.rows(range(*index.indices(len(self))))
        return self.rows([index])[0]


class _DecodedImages(Dataset):
    """``(index, pixels or None)`` of each image: broken images become ``None`` instead of an exception."""

    def __init__(self, images, transform, start, end):
        self.images, self.transform, self.start, self.end = images, transform, start, end

    def __len__(self):
        return self.end - self.start

    def __getitem__(self, offset):
        index = self.start + offset
        try:
            return index, self.transform(self.images[index])
        except IMAGE_ERRORS:
            return index, None


def _collate_decoded(items):
    readable = [(index, pixels) for index, pixels in items if pixels is not None]
    unreadable = [index for index, pixels in items if pixels is None]
    pixels = torch.stack([p for _, p in readable]) if readable else None
    return [index for index, _ in readable], pixels, unreadable


def _build_shard(split, encoder, transform, start, end, batch_size, device, num_workers, progress):
    # A generator of its own: a DataLoader without one draws its workers' seed from the global random state, so
    # a run that builds the cache would then sample other rollouts than one that reads it.
    loader = DataLoader(_DecodedImages(split.images, transform, start, end), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate_decoded, generator=torch.Generator())  # fmt: skip
    features, unreadable, dim = None, [], None
    for indices, pixels, broken in loader:
        unreadable += broken
        if pixels is not None:
            with torch.no_grad():
                encoded = encoder(pixels.to(device)).float().cpu().numpy()  # [b, D]
            if features is None:
                dim = encoded.shape[1]
                features = np.zeros((end - start, dim), dtype=np.float16)
            features[np.asarray(indices) - start] = encoded.astype(np.float16)
        progress.update(len(indices) + len(broken))
    return features, unreadable


def _encoder_width(encoder, transform, device):
    """The width of the encoder's features, from one blank image."""
    with torch.no_grad():
        return encoder(transform(Image.new("RGB", (224, 224))).unsqueeze(0).to(device)).shape[1]


def describe_transform(transform):
    """The preprocessing as text for the cache key: a transformers image processor's settings, or the repr of
    a torchvision pipeline."""
    owner = getattr(transform, "__self__", None)  # a model's bound method that calls its image processor
    processor = getattr(owner, "image_processor", None) or getattr(getattr(owner, "processor", None),
                                                                   "image_processor", None)  # fmt: skip
    if processor is not None:
        return json.dumps(processor.to_dict(), sort_keys=True, default=str)
    return repr(transform)


def build_cache(directory, split, encoder, transform, key, batch_size=256, device="cpu", num_workers=0, rebuild=False,
                desc=None):  # fmt: skip
    """Encodes the split's images into ``directory`` (resuming a partial build of the same key; from scratch with
    ``rebuild``); returns the cache.  ``encoder(pixels [b, 3, H, W]) -> [b, D]``; ``transform(PIL image) ->
    pixels [3, H, W]`` (run in ``num_workers`` DataLoader workers)."""
    status = "missing" if rebuild else cache_status(directory, key)
    if status == "ok":
        return FeatureCache(directory)
    if status != "partial":
        if status.startswith("stale"):
            print(f"feature cache {directory} is stale ({status[7:]}): rebuilding it", flush=True)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        atomic_write_text("\n".join(split.ids) + "\n", os.path.join(directory, "ids.txt"))
        atomic_write_text("\n".join(split.sources) + "\n", os.path.join(directory, "sources.txt"))
        atomic_write_text(json.dumps(asdict(key), indent=1), os.path.join(directory, "building.json"))
    n_shards = max(1, -(-len(split) // key.shard_size))
    names = [f"features-{s:05d}.npy" for s in range(n_shards)]
    done = sum(os.path.isfile(os.path.join(directory, name)) for name in names)
    started, dim = time.time(), None
    with tqdm(total=len(split), initial=min(len(split), done * key.shard_size), desc=desc, leave=False) as progress:
        for shard in range(n_shards):
            path = os.path.join(directory, names[shard])
            if os.path.isfile(path):  # built before an interruption
                dim = np.load(path, mmap_mode="r").shape[1]
                continue
            start, end = shard * key.shard_size, min(len(split), (shard + 1) * key.shard_size)
            features, unreadable = _build_shard(split, encoder, transform, start, end, batch_size, device,
                                                num_workers, progress)  # fmt: skip
            if features is None:  # nothing readable in this shard: zero rows of the encoder's width
                features = np.zeros((end - start, dim or _encoder_width(encoder, transform, device)), np.float16)
            dim = features.shape[1]
            atomic_write_text(json.dumps(unreadable), os.path.join(directory, f"unreadable-{shard:05d}.json"))
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, features)  # the shard file appears only once complete: it marks the shard done
    unreadable = []
    for shard in range(n_shards):
        unreadable += _read_json(os.path.join(directory, f"unreadable-{shard:05d}.json")) or []
    manifest = {"key": asdict(key), "shards": names, "dim": dim, "unreadable": sorted(unreadable),
                "build_seconds": round(time.time() - started, 2)}  # fmt: skip
    atomic_write_text(json.dumps(manifest, indent=1), os.path.join(directory, "manifest.json"))
    return FeatureCache(directory)


class CachedRows:
    """The rows of a ``FeatureCache`` at ``indices`` (a split without its unreadable images), indexable by
    position and by slice, like the tensors ``EncodedSplit`` also accepts."""

    def __init__(self, cache: FeatureCache, indices):
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.cache.rows(self.indices[index])
        return self.cache.rows([self.indices[index]])[0]

    def all(self, chunk=100_000):
        """Every row as one ``[n, D]`` fp32 array, read a chunk at a time."""
        return np.concatenate([self[start : start + chunk].numpy() for start in range(0, len(self), chunk)])


def default_feature_cache_dir(cache_dir=None):
    """``<cache_dir>/features``; by default in the user cache directory (``~/.cache/discriminative_captioner``)."""
    import platformdirs

    return os.path.join(cache_dir or platformdirs.user_cache_dir("discriminative_captioner"), "features")


def readable_indices(caches: List[FeatureCache], n_images):
    """The indices that every cache could encode."""
    unreadable = set().union(*(cache.unreadable for cache in caches))
    return [i for i in range(n_images) if i not in unreadable]
