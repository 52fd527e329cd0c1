"""What train.py and evaluate.py share: options -> data set, captioner, retriever and encoded splits.

Each split's frozen encodings (the retriever's image embeddings, and ClipCap's CLIP features) come from the
feature cache (``data/feature_cache.py``): computed once per data set, split and encoder, then read by memory
mapping, so a run with a matching cache decodes no image and runs no image encoder.  Broken images are found
while the cache is built; they are left out of the split, and the counts are printed when the split is loaded.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field

from .captioners import build_captioner
from .checkpointing import atomic_write_text
from .data import EncodedSplit, TransformedImages, load_dataset
from .data.feature_cache import (
    CachedRows,
    CacheKey,
    build_cache,
    cache_directory,
    default_feature_cache_dir,
    describe_transform,
    readable_indices,
)
from .errors import UsageError
from .opts import apply_model_defaults
from .preflight import check_files
from .retrievers import build_retriever


@dataclass
class Experiment:
    """The pieces of a run before the game is built."""

    dataset: object
    captioner: object
    retriever: object
    opts: object = None
    rebuilt: set = field(default_factory=set)  # feature caches already rebuilt by this run (--rebuild)


def build_experiment(opts):
    """Checks every file first, then loads the data set, the captioner and the retriever (with the data set's
    model defaults)."""
    check_files(opts, datasets=[opts.dataset])
    dataset = load_dataset(opts)
    apply_model_defaults(opts, dataset)
    captioner = build_captioner(opts).to(opts.device)
    retriever = build_retriever(opts).to(opts.device)
    return Experiment(dataset, captioner, retriever, opts)


def model_name(name):
    """A model option as the cache records it: local files by absolute path, hub and CLIP names as given."""
    return os.path.abspath(name) if name and os.path.exists(name) else str(name)


def encoder_models(opts):
    """The name of each frozen image encoder whose outputs are cached."""
    return {
        "captioner": f"clip {model_name(opts.captioner_clip_model)}",
        "retriever": f"{opts.clip_backend} {model_name(opts.clip_model)} {opts.retriever_precision}",
    }


def dataset_cache_name(opts, dataset):
    """The data set's directory in the feature cache: its name and a hash of where it was read from."""
    location = getattr(dataset, "root", None) or getattr(dataset, "directory", "")
    return f"{opts.dataset}-{hashlib.sha256(os.path.abspath(location).encode()).hexdigest()[:10]}"


def split_cache(experiment, split, role, encoder, transform, device):
    """The split's feature cache for one frozen encoder, built (or resumed, or rebuilt if stale) when needed."""
    opts = experiment.opts
    root = opts.feature_cache_dir or default_feature_cache_dir(opts.cache_dir)
    dataset = experiment.dataset
    cache_split = dataset.cache_split(split.name) if hasattr(dataset, "cache_split") else split.name
    directory = cache_directory(root, dataset_cache_name(opts, dataset), cache_split, role)
    key = CacheKey.of(split, encoder_models(opts)[role], describe_transform(transform))
    rebuild = opts.rebuild and directory not in experiment.rebuilt
    experiment.rebuilt.add(directory)
    return build_cache(directory, split, encoder, transform, key, batch_size=opts.feature_batch_size,
                       device=device, num_workers=opts.num_workers, rebuild=rebuild,
                       desc=f"{role} features: {split.name}")  # fmt: skip


def split_counts(split, n_used):
    """How many of a split's listed images were used, missing (no file) or unreadable (could not be decoded)."""
    listed = len(split) + split.missing
    return {"listed": listed, "missing": split.missing, "unreadable": len(split) - n_used, "used": n_used}


def encode_split(experiment, name, device):
    """A split with its frozen encodings from the feature cache, its broken images left out.

    The retriever's embeddings are always cached; the captioner's inputs are cached when its encoder is frozen
    (ClipCap) and otherwise decoded from the images when read (BLIP; in ``--num_workers`` DataLoader workers).
    """
    split = experiment.dataset.split(name)
    captioner, retriever, opts = experiment.captioner, experiment.retriever, experiment.opts
    caches = {"retriever": split_cache(experiment, split, "retriever", retriever.encode_images,
                                       retriever.image_transform, device)}  # fmt: skip
    if captioner.cache_inputs:
        caches["captioner"] = split_cache(experiment, split, "captioner", captioner.encode_images,
                                          captioner.image_transform, device)  # fmt: skip
    readable = readable_indices(list(caches.values()), len(split))
    counts = split_counts(split, len(readable))
    print(f"data {opts.dataset} {name}: {counts['used']} images used of {counts['listed']} listed "
          f"({counts['missing']} missing, {counts['unreadable']} unreadable)", flush=True)  # fmt: skip
    if not readable:
        location = getattr(experiment.dataset, "root", "the data set")
        raise UsageError(f"{opts.dataset} {name}: no readable image in {location} (see data_scripts/check_data.py)")
    kept = split if len(readable) == len(split) else split.subset(readable)
    if captioner.cache_inputs:
        sender_inputs = CachedRows(caches["captioner"], readable)
    else:
        sender_inputs = TransformedImages(kept.images, captioner.image_transform)
    encoded = EncodedSplit(kept, sender_inputs, CachedRows(caches["retriever"], readable))
    encoded.counts = counts
    return encoded


def write_data_counts(directory, encoded_splits):
    """Writes each split's image counts (used, missing, unreadable) into the run directory."""
    counts = {dataset.split.name: dataset.counts for dataset in encoded_splits}
    atomic_write_text(json.dumps(counts, indent=2), os.path.join(directory, "data_counts.json"))
