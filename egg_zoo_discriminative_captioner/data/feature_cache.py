"""The frozen-feature cache: each image of a split encoded once by a frozen encoder, kept as fp16 shards on disk.

One cache directory per (data set, split, encoder role) holds

    features-00000.npy, ...   fp16 ``[rows, D]`` arrays of ``shard_size`` images each, read by memory mapping
    shard-00000.json          that shard's size and sha256, and the indices (in the split) of its images that
                              could not be decoded; written just before the shard file appears
    ids.txt, sources.txt      the split's image ids and source files, one per line
    building.json             the key the shards are being built for (written after ids.txt and sources.txt)
    manifest.json             written last: the key, the shard list, D, the unreadable images, and the size and
                              sha256 of every other file

The key is the encoder's model name, its preprocessing, and hashes of the image ids and of the source list: a
cache whose manifest records another key is *stale* and rebuilt.  This module holds the format: the key, a cache's
status, opening and reading a built cache, and checking it.  Opening a cache checks every file's size (a truncated
shard is refused in one line); ``verify_cache`` also checks the sha256 sums (``data_scripts/check_data.py
--verify_cache``).  Building one, resumable after a kill at any point: ``feature_cache_build.py``.
"""

import glob
import hashlib
import json
import os
import shlex
from dataclasses import asdict, dataclass
from typing import List

import numpy as np
import torch

from ..runtime.downloads import default_cache_dir
from ..runtime.errors import UsageError

FORMAT_VERSION = 2  # 2: the manifest records every file's size and sha256
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
    """``<root>/<dataset>/<split>/<role>`` (role: "captioner", "retriever", or "retriever-<hash>" for another
    retriever than the run's: ``experiment.retriever_cache_role``)."""
    return os.path.join(root, dataset, split, role)


def read_json(path):
    """The JSON record in ``path``; None where it is absent or does not parse."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cache_status(directory, key):
    """``"ok"``, ``"missing"``, ``"partial"`` (a build to resume) or ``"stale: <what differs>"``."""
    manifest = read_json(os.path.join(directory, "manifest.json"))
    if manifest is None:
        building = read_json(os.path.join(directory, "building.json"))
        if building == asdict(key):
            return "partial"
        return "missing" if building is None else "stale: " + _difference(building, asdict(key))
    if manifest.get("key") != asdict(key):
        return "stale: " + _difference(manifest.get("key") or {}, asdict(key))
    shards = [os.path.join(directory, name) for name in manifest.get("shards", [])]
    if not all(os.path.isfile(path) for path in shards):
        return "stale: shard files are missing"
    return "ok"


def cached_model(directory):
    """The encoder whose features ``directory`` holds or is being built with (its key's model), or None."""
    for name in ("manifest.json", "building.json"):
        record = read_json(os.path.join(directory, name))
        key = (record or {}).get("key") if name == "manifest.json" else record
        if isinstance(key, dict) and key.get("model"):
            return key["model"]
    return None


def _difference(recorded, wanted):
    fields = [name for name in wanted if recorded.get(name) != wanted[name]]
    return ", ".join(f"{name} differs" for name in fields) or "unreadable record"


def rebuild_advice(directory):
    """How to rebuild a damaged cache, as the end of a one-line message."""
    return f"rebuild it: rerun with --rebuild, or delete it (rm -r {shlex.quote(directory)}) and rerun"


def _size_problem(directory, manifest):
    """The first file of a cache whose size differs from the manifest's record, as text; ``None`` if none."""
    for name, record in manifest["files"].items():
        path = os.path.join(directory, name)
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size != record["bytes"]:
            found = "is absent" if size is None else f"has {size} bytes"
            return f"{name} {found}, the manifest records {record['bytes']} (truncated or replaced)"
    return None


def sha256_of_file(path, chunk=1 << 24):
    """``(bytes, sha256)`` of a file, read 16 MiB at a time."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


class FeatureCache:
    """A built cache, read by memory mapping: ``cache[i]`` is image i's features (fp32 ``[D]``), ``cache[a:b]``
    or ``cache.rows(indices)`` several of them (``[n, D]``).  Opening it checks every file's size against the
    manifest (a stat per file: a truncated shard is refused before anything reads it)."""

    def __init__(self, directory):
        self.directory = directory
        self.manifest = read_json(os.path.join(directory, "manifest.json"))
        if self.manifest is None:
            raise UsageError(f"feature cache {directory} has no readable manifest; {rebuild_advice(directory)}")
        if (self.manifest.get("key") or {}).get("format_version") != FORMAT_VERSION or "files" not in self.manifest:
            raise UsageError(f"feature cache {directory} has an older format; {rebuild_advice(directory)}")
        problem = _size_problem(directory, self.manifest)
        if problem is not None:
            raise UsageError(f"feature cache {directory} is damaged: {problem}; {rebuild_advice(directory)}")
        self.shard_size = self.manifest["key"]["shard_size"]
        try:
            self.shards = [np.load(os.path.join(directory, name), mmap_mode="r") for name in self.manifest["shards"]]
        except (OSError, ValueError) as error:
            raise UsageError(f"feature cache {directory} is damaged ({error}); {rebuild_advice(directory)}") from None
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


def verify_cache(directory):
    """One cache directory's state as one line: ``"ok"``, ``"partial (k of n shards built)"``, ``"missing"``,
    ``"stale: <why>"`` (an older format: the next run rebuilds it) or ``"damaged: <which file, what differs>"``.
    Reads every file, a chunk at a time, to check its sha256 against the manifest."""
    manifest_path = os.path.join(directory, "manifest.json")
    manifest = read_json(manifest_path)
    if manifest is None:
        if os.path.exists(manifest_path):
            return "damaged: manifest.json does not parse"
        building = read_json(os.path.join(directory, "building.json"))
        if building is None:
            return "missing"
        if building.get("format_version") != FORMAT_VERSION:
            return f"stale: format version {building.get('format_version')} (this code writes {FORMAT_VERSION})"
        n_shards = max(1, -(-building["n_images"] // building["shard_size"]))
        done = len(glob.glob(os.path.join(glob.escape(directory), "features-*.npy")))
        return f"partial ({done} of {n_shards} shards built; the next run resumes it)"
    version = (manifest.get("key") or {}).get("format_version")
    if version != FORMAT_VERSION or "files" not in manifest:
        return f"stale: format version {version} (this code writes {FORMAT_VERSION}; the next run rebuilds it)"
    problem = _size_problem(directory, manifest)
    if problem is not None:
        return "damaged: " + problem
    for name, record in manifest["files"].items():
        _, sha256 = sha256_of_file(os.path.join(directory, name))
        if sha256 != record["sha256"]:
            return f"damaged: {name} has sha256 {sha256[:12]}..., the manifest records {record['sha256'][:12]}..."
    return "ok"


def describe_transform(transform):
    """The preprocessing as text for the cache key: a transformers image processor's settings, or the repr of
    a torchvision pipeline."""
    owner = getattr(transform, "__self__", None)  # a model's bound method that calls its image processor
    processor = getattr(owner, "image_processor", None) or getattr(getattr(owner, "processor", None),
                                                                   "image_processor", None)  # fmt: skip
    if processor is not None:
        return json.dumps(processor.to_dict(), sort_keys=True, default=str)
    return repr(transform)


class CachedRows:
    """The rows of a ``FeatureCache`` at ``indices`` (a split without its unreadable images), indexable by
    position, by slice and by an array of positions, like the tensors ``EncodedSplit`` also accepts."""

    def __init__(self, cache: FeatureCache, indices):
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.cache.rows(self.indices[index])
        if isinstance(index, (list, np.ndarray, torch.Tensor)):
            return self.cache.rows(self.indices[np.asarray(index, dtype=np.int64)])
        return self.cache.rows([self.indices[index]])[0]

    def all(self, chunk=100_000):
        """Every row as one ``[n, D]`` fp32 array, read a chunk at a time into it (one copy in memory, not two:
        6.8 GB at Conceptual Captions' 3.3M x 512)."""
        out = np.empty((len(self), self.cache.dim or 0), dtype=np.float32)
        for start in range(0, len(self), chunk):
            out[start : start + chunk] = self[start : start + chunk].numpy()
        return out


def default_feature_cache_dir(cache_dir=None):
    """``<cache_dir>/features``; by default in the user cache directory (``~/.cache/discriminative_captioner``)."""
    return os.path.join(cache_dir or default_cache_dir(), "features")


def readable_indices(caches: List[FeatureCache], n_images):
    """The indices that every cache could encode."""
    unreadable = set().union(*(cache.unreadable for cache in caches))
    return [i for i in range(n_images) if i not in unreadable]
