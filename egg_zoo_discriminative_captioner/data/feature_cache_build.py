"""Building a frozen-feature cache (its format, and reading it: ``feature_cache.py``).

The split's images are decoded in DataLoader workers (a broken image is counted as unreadable, not raised) and
encoded a shard at a time.  A build that stops at any point (a job killed with SIGKILL) resumes at the first
missing shard, provided ``building.json`` records the same key, and ends with the same bytes as a build in one go
(nothing in the cache depends on when or how fast it was built).  Every file appears by an atomic rename; a
resumed build removes the temporary files a killed one left.  One process builds a cache at a time, holding
``<cache dir>.lock`` beside it (``runtime/locks.py``); another waits for it.  Broken images are counted as
unreadable in the build, so a run with a matching cache never decodes an image.
"""

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..runtime import locks
from ..runtime.atomic import atomic_path, atomic_write_text, remove_leftovers
from .feature_cache import FeatureCache, cache_status, read_json, sha256_of_file
from .images import IMAGE_ERRORS


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
    record = read_json(_shard_record(directory, shard))
    path = os.path.join(directory, name)
    if record is None or not os.path.isfile(path) or sha256_of_file(path) != (record["bytes"], record["sha256"]):
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
        size, sha256 = sha256_of_file(os.path.join(directory, name))
        files[name] = {"bytes": size, "sha256": sha256}
    for shard, record in enumerate(records):
        size, sha256 = sha256_of_file(_shard_record(directory, shard))
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
