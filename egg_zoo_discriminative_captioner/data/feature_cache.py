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
cache whose manifest records another key is *stale* and rebuilt.  A build that stops at any point (a job killed
with SIGKILL) resumes at the first missing shard, provided ``building.json`` records the same key, and ends with
the same bytes as a build in one go (nothing in the cache depends on when or how fast it was built).  Every file
appears by an atomic rename; a resumed build removes the temporary files a killed one left.  One process builds
a cache at a time, holding ``<cache dir>.lock`` beside it (``runtime/locks.py``); another waits for it.  Opening a cache
checks every file's size (a truncated shard is refused in one line); ``verify_cache`` also checks the sha256
sums (``data_scripts/check_data.py --verify_cache``).  Broken images are counted as unreadable in the build, so a
run with a matching cache never decodes an image.
"""

import glob
import hashlib
import json
import os
import shlex
import shutil
import time
from dataclasses import asdict, dataclass
from typing import List

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..runtime import locks
from ..runtime.atomic import atomic_path, atomic_write_text, remove_leftovers
from ..runtime.downloads import default_cache_dir
from ..runtime.errors import UsageError
from .images import IMAGE_ERRORS

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


def cached_model(directory):
    """The encoder whose features ``directory`` holds or is being built with (its key's model), or None."""
    for name in ("manifest.json", "building.json"):
        record = _read_json(os.path.join(directory, name))
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


def _sha256_of_file(path, chunk=1 << 24):
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
        self.manifest = _read_json(os.path.join(directory, "manifest.json"))
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
    manifest = _read_json(manifest_path)
    if manifest is None:
        if os.path.exists(manifest_path):
            return "damaged: manifest.json does not parse"
        building = _read_json(os.path.join(directory, "building.json"))
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
        _, sha256 = _sha256_of_file(os.path.join(directory, name))
        if sha256 != record["sha256"]:
            return f"damaged: {name} has sha256 {sha256[:12]}..., the manifest records {record['sha256'][:12]}..."
    return "ok"


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


class _HashingWriter:
    """A file's ``write`` that also counts the bytes and hashes them, so a shard's checksum costs no second read."""

    def __init__(self, file):
        self.file, self.bytes, self.digest = file, 0, hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        self.bytes += len(data)
        return self.file.write(data)


def _shard_record(directory, shard):
    return os.path.join(directory, f"shard-{shard:05d}.json")


def _start_build(directory, split, key):
    """An empty cache directory holding what the build is for; ``building.json`` last, so that a build killed
    before it counts as missing (and starts again), one killed after it as partial (and resumes)."""
    for name in ("manifest.json", "building.json"):  # first: a killed removal must not look like a partial build
        if os.path.isfile(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    atomic_write_text("\n".join(split.ids) + "\n", os.path.join(directory, "ids.txt"))
    atomic_write_text("\n".join(split.sources) + "\n", os.path.join(directory, "sources.txt"))
    atomic_write_text(json.dumps(asdict(key), indent=1), os.path.join(directory, "building.json"))


def _built_shard(directory, name, shard):
    """The record of a shard an earlier, interrupted build finished, if its file matches it; else ``None`` (and
    the shard is built again)."""
    record = _read_json(_shard_record(directory, shard))
    path = os.path.join(directory, name)
    if record is None or not os.path.isfile(path) or _sha256_of_file(path) != (record["bytes"], record["sha256"]):
        return None
    return record


def build_cache(directory, split, encoder, transform, key, batch_size=256, device="cpu", num_workers=0, rebuild=False,
                desc=None):  # fmt: skip
    """Encodes the split's images into ``directory`` (resuming a partial build of the same key; from scratch with
    ``rebuild``); returns the cache.  ``encoder(pixels [b, 3, H, W]) -> [b, D]``; ``transform(PIL image) ->
    pixels [3, H, W]`` (run in ``num_workers`` DataLoader workers).

    Each shard is written to a temporary file, its record (size, sha256, unreadable images) next, and then the
    shard is renamed into place: killed between any two of these writes, the build resumes with the same result.
    One process builds a cache at a time: it holds ``<directory>.lock`` (beside the cache, which the build
    deletes and recreates); another builder waits for it, then finds the cache built (or resumes the partial build
    of a killed one).  Reading a built cache takes no lock.
    """
    status = "missing" if rebuild else cache_status(directory, key)
    if status == "ok":
        return FeatureCache(directory)
    with locks.wait(os.path.abspath(directory) + ".lock", f"feature cache {directory}"):
        if not rebuild:
            status = cache_status(directory, key)  # another builder may have finished it while this one waited
        if status == "ok":
            return FeatureCache(directory)
        return _build(directory, split, encoder, transform, key, status, batch_size, device, num_workers, desc)


def _build(directory, split, encoder, transform, key, status, batch_size, device, num_workers, desc):
    """``build_cache`` once it holds the cache's lock: resumes a ``"partial"`` build, or builds from scratch."""
    if status == "partial":
        remove_leftovers(directory)  # a killed build's half-written temporary files
    else:
        if status.startswith("stale"):
            print(f"feature cache {directory} is stale ({status[7:]}): rebuilding it", flush=True)
        _start_build(directory, split, key)
    n_shards = max(1, -(-len(split) // key.shard_size))
    names = [f"features-{s:05d}.npy" for s in range(n_shards)]
    records, dim, started, encoded = [], None, time.time(), 0
    with tqdm(total=len(split), desc=desc, leave=False) as progress:
        for shard in range(n_shards):
            path = os.path.join(directory, names[shard])
            start, end = shard * key.shard_size, min(len(split), (shard + 1) * key.shard_size)
            record = _built_shard(directory, names[shard], shard) if os.path.isfile(path) else None
            if record is not None:  # built before an interruption
                records.append(record)
                dim = np.load(path, mmap_mode="r").shape[1]
                progress.update(end - start)
                continue
            features, unreadable = _build_shard(split, encoder, transform, start, end, batch_size, device,
                                                num_workers, progress)  # fmt: skip
            if features is None:  # nothing readable in this shard: zero rows of the encoder's width
                features = np.zeros((end - start, dim or _encoder_width(encoder, transform, device)), np.float16)
            dim, encoded = features.shape[1], encoded + 1
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    writer = _HashingWriter(f)
                    np.save(writer, features)
                record = {"bytes": writer.bytes, "sha256": writer.digest.hexdigest(), "unreadable": unreadable}
                atomic_write_text(json.dumps(record), _shard_record(directory, shard))
                records.append(record)
            # the shard file appears only once complete, after its record: it marks the shard done
    files = {}
    for name in ("ids.txt", "sources.txt", "building.json"):
        size, sha256 = _sha256_of_file(os.path.join(directory, name))
        files[name] = {"bytes": size, "sha256": sha256}
    for shard, record in enumerate(records):
        size, sha256 = _sha256_of_file(_shard_record(directory, shard))
        files[os.path.basename(_shard_record(directory, shard))] = {"bytes": size, "sha256": sha256}
        files[names[shard]] = {"bytes": record["bytes"], "sha256": record["sha256"]}
    unreadable = sorted(index for record in records for index in record["unreadable"])
    # nothing here depends on when or how fast it was built: a resumed build writes the same bytes
    manifest = {"key": asdict(key), "shards": names, "dim": dim, "unreadable": unreadable, "files": files}
    atomic_write_text(json.dumps(manifest, indent=1), os.path.join(directory, "manifest.json"))
    if encoded:
        print(f"feature cache {directory}: {encoded} of {n_shards} shards encoded in {time.time() - started:.0f} s",
              flush=True)  # fmt: skip
    return FeatureCache(directory)


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
