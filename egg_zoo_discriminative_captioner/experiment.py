"""What train.py and evaluate.py share: the run config -> data set, captioner, retriever and encoded splits.

Each split's frozen encodings (the retriever's image embeddings, and ClipCap's CLIP features) come from the
feature cache (``data/feature_cache.py``): computed once per data set, split and encoder, then read by memory
mapping, so a run with a matching cache decodes no image and runs no image encoder.  Broken images are found
while the cache is built; they are left out of the split, and the counts are printed when the split is loaded.
"""

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from .captioners import build_captioner
from .data import EncodedSplit, TransformedImages, load_dataset
from .data.feature_cache import (
    CachedRows,
    CacheKey,
    cache_directory,
    cached_model,
    default_feature_cache_dir,
    describe_transform,
    readable_indices,
)
from .data.feature_cache_build import build_cache
from .data.images import ImageSubset
from .retrievers import build_retriever
from .retrievers.specs import names_backend, parse_retriever
from .runtime.checkpointing import atomic_write_text
from .runtime.errors import UsageError
from .runtime.preflight import check_files


@dataclass
class Experiment:
    """The pieces of a run before the game is built."""

    dataset: object
    captioner: object
    retriever: object
    config: object = None  # the run's, with its models resolved
    rebuilt: set = field(default_factory=set)  # feature caches already rebuilt by this run (--rebuild)
    # ``(retriever, options)`` of the run's other retrievers (``--clip_model A B ...``), each with its own cache
    extra_retrievers: list = field(default_factory=list)


def build_experiment(config):
    """Checks every file first, then loads the data set, the captioner and the retriever; the experiment's
    ``config`` is ``config`` with its models resolved (local copies of released files, the data set's models)."""
    others = [(f"retriever {extra.clip_model}", extra, "--clip_model", "--clip_pretrained")
              for extra in extra_retriever_options(config)]  # fmt: skip
    config = check_files(config, datasets=[config.dataset], training=True, other_retrievers=others)
    dataset = load_dataset(config)
    opts = config.with_model_defaults(dataset.model_defaults(config))
    captioner = build_captioner(opts).to(opts.device)
    retriever = build_retriever(opts).to(opts.device)
    extra = [(build_retriever(extra_opts).to(opts.device), extra_opts) for extra_opts in extra_retriever_options(opts)]
    return Experiment(dataset, captioner, retriever, opts, extra_retrievers=extra)


def extra_retriever_options(opts):
    """The config of each of the run's other retrievers: ``opts`` with its backend, model and open_clip weights
    (from its ``BACKEND:MODEL[:PRETRAINED]`` spec, or ``--clip_backend`` and ``--clip_pretrained``)."""
    models, weights = opts.extra_clip_models, opts.extra_clip_pretrained
    plain = [model for model in models if not names_backend(model)]
    if opts.clip_backend == "open_clip" and plain and len(weights) != len(models):
        raise UsageError("--clip_backend open_clip with several --clip_model needs one --clip_pretrained per model, "
                         "or each model as open_clip:MODEL:PRETRAINED")  # fmt: skip
    alone = opts.replace(extra_clip_models=(), extra_clip_pretrained=())
    return [parse_retriever(model, "--clip_model").options(alone) if names_backend(model)
            else alone.replace(clip_model=model, clip_pretrained=weights[i] if weights else None)
            for i, model in enumerate(models)]  # fmt: skip


def model_name(name):
    """A model option as the cache records it: local files by absolute path, hub and CLIP names as given."""
    return os.path.abspath(name) if name and os.path.exists(name) else str(name)


def encoder_models(opts):
    """The name of each frozen image encoder whose outputs are cached.

    The retriever's name records its backend, model and precision, and its open_clip weights (``--clip_pretrained``)
    when set: without them (every other configuration) the name is what it always was, so those caches stay valid.
    """
    retriever = f"{opts.clip_backend} {model_name(opts.clip_model)} {opts.retriever_precision}"
    pretrained = opts.clip_pretrained
    if pretrained:
        retriever += f" pretrained={model_name(pretrained)}"
    return {"captioner": f"clip {model_name(opts.captioner_clip_model)}", "retriever": retriever}


def retriever_cache_role(opts, main_opts, split_directory=None):
    """The feature-cache directory of retriever ``opts`` in a run whose own retriever is ``main_opts``'s: the run's
    encoder keeps ``retriever``, any other encoder (``evaluate --eval_retrievers``) has one of its own, named by a
    hash of its model name.  With ``split_directory`` (the split's cache), the run's encoder too gets one of its
    own when ``retriever`` there holds another model's cache (written by a run with another retriever): switching
    retrievers never rebuilds a cache another one needs."""
    model = encoder_models(opts)["retriever"]
    if model == encoder_models(main_opts)["retriever"]:
        held = None if split_directory is None else cached_model(os.path.join(split_directory, "retriever"))
        if held in (None, model):
            return "retriever"
    return f"retriever-{hashlib.sha256(model.encode()).hexdigest()[:12]}"


def dataset_cache_name(opts, dataset):
    """The data set's directory in the feature cache: its name and a hash of where it was read from, or, for a data
    set that offers a ``cache_identity()`` (a Hugging Face one: its fingerprints), of what it holds."""
    identity = getattr(dataset, "cache_identity", None)  # only the hf data sets have one
    location = identity() if identity else os.path.abspath(dataset.root)
    return f"{opts.dataset}-{hashlib.sha256(location.encode()).hexdigest()[:10]}"


def split_cache(experiment, split, kind, encoder, transform, device, model_opts=None):
    """The split's feature cache for one frozen encoder (``kind``: "captioner" or "retriever"), built (or resumed,
    or rebuilt if stale) when needed.

    ``model_opts``: the options of another retriever than the run's (its model names the cache, in a directory of
    its own: ``retriever_cache_role``)."""
    opts = experiment.config
    root = opts.feature_cache_dir or default_feature_cache_dir(opts.cache_dir)
    dataset = experiment.dataset
    cache_split = dataset.cache_split(split.name)
    split_directory = cache_directory(root, dataset_cache_name(opts, dataset), cache_split, "")
    role = kind if kind == "captioner" else retriever_cache_role(model_opts or opts, opts, split_directory)
    directory = os.path.join(split_directory, role)
    key = CacheKey.of(split, encoder_models(model_opts or opts)[kind], describe_transform(transform))
    rebuild = opts.rebuild and directory not in experiment.rebuilt
    experiment.rebuilt.add(directory)
    return build_cache(directory, split, encoder, transform, key, batch_size=opts.feature_batch_size,
                       device=device, num_workers=opts.num_workers, rebuild=rebuild,
                       desc=f"{kind} features: {split.name}")  # fmt: skip


def split_counts(split, n_used):
    """How many of a split's listed images were used, missing (no file) or unreadable (could not be decoded)."""
    listed = len(split) + split.missing
    return {"listed": listed, "missing": split.missing, "unreadable": len(split) - n_used, "used": n_used}


def encode_split(experiment, name, device, other_retrievers=()):
    """A split with its frozen encodings from the feature cache, its broken images left out.

    The retriever's embeddings are always cached; the captioner's inputs are cached when its encoder is frozen
    (ClipCap) and otherwise decoded from the images when read (BLIP; in ``--num_workers`` DataLoader workers).
    ``other_retrievers``: ``(retriever, options)`` of retrievers other than the run's (``evaluate
    --eval_retrievers``), each with a feature cache of its own; their embeddings of the same images, in the same
    order, are in ``encoded.other_receiver_inputs``.
    """
    split = experiment.dataset.split(name)
    captioner, retriever, opts = experiment.captioner, experiment.retriever, experiment.config
    caches = {"retriever": split_cache(experiment, split, "retriever", retriever.encode_images,
                                       retriever.image_transform, device)}  # fmt: skip
    for i, (other, other_opts) in enumerate(other_retrievers):
        if encoder_models(other_opts)["retriever"] == encoder_models(opts)["retriever"]:  # the run's: its cache
            caches[f"other {i}"] = caches["retriever"]
        else:
            caches[f"other {i}"] = split_cache(experiment, split, "retriever", other.encode_images,
                                               other.image_transform, device, model_opts=other_opts)  # fmt: skip
    if captioner.cache_inputs:
        caches["captioner"] = split_cache(experiment, split, "captioner", captioner.encode_images,
                                          captioner.image_transform, device)  # fmt: skip
    readable = readable_indices(list(caches.values()), len(split))
    counts = split_counts(split, len(readable))
    print(f"data {opts.dataset} {name}: {counts['used']} images used of {counts['listed']} listed "
          f"({counts['missing']} missing, {counts['unreadable']} unreadable)", flush=True)  # fmt: skip
    if not readable:
        location = experiment.dataset.root
        raise UsageError(f"{opts.dataset} {name}: no readable image in {location} (see data_scripts/check_data.py)")
    kept = split if len(readable) == len(split) else split.subset(readable)
    if captioner.cache_inputs:
        sender_inputs = CachedRows(caches["captioner"], readable)
    else:
        sender_inputs = TransformedImages(kept.images, captioner.image_transform)
    encoded = EncodedSplit(kept, sender_inputs, CachedRows(caches["retriever"], readable))
    encoded.counts = counts
    encoded.other_receiver_inputs = [CachedRows(caches[f"other {i}"], readable) for i in range(len(other_retrievers))]
    return encoded


class JoinedRows:
    """Rows of several retrievers' embeddings of the same images, joined along the embedding: ``[D1 + D2 + ...]``
    per image (the receiver splits them again, ``archs.RetrieverReceiver``)."""

    def __init__(self, parts):
        if len({len(part) for part in parts}) != 1:
            raise ValueError("joined rows need one row per image in every part")
        self.parts = list(parts)

    def __len__(self):
        return len(self.parts[0])

    def __getitem__(self, index):
        return torch.cat([torch.as_tensor(part[index]) for part in self.parts], dim=-1)


def with_extra_retrievers(encoded):
    """``encoded`` whose receiver inputs also hold the run's other retrievers' embeddings (``JoinedRows``)."""
    others = encoded.other_receiver_inputs
    if not others:
        return encoded
    joined = EncodedSplit(encoded.split, encoded.sender_inputs, JoinedRows([encoded.receiver_inputs, *others]))
    joined.counts = encoded.counts
    return joined


def rows_at(inputs, indices):
    """The rows of an ``EncodedSplit``'s inputs at ``indices``, without reading them: a cache's rows stay cache rows
    (no feature cache is built for a subset), images stay transformed when read."""
    if isinstance(inputs, CachedRows):
        return CachedRows(inputs.cache, inputs.indices[indices])
    if isinstance(inputs, JoinedRows):
        return JoinedRows([rows_at(part, indices) for part in inputs.parts])
    if isinstance(inputs, TransformedImages):
        return TransformedImages(ImageSubset(inputs.images, list(indices)), inputs.transform)
    return inputs[np.asarray(indices)]  # a tensor


def subset_encoded(encoded, indices, name):
    """The ``EncodedSplit`` ``encoded`` restricted to the images at ``indices`` (in that order), as split ``name``."""
    split = dataclasses.replace(encoded.split.subset(indices), name=name, missing=0)
    return EncodedSplit(split, rows_at(encoded.sender_inputs, indices), rows_at(encoded.receiver_inputs, indices))


def hold_out(train, n_images, seed, dataset_name="data"):
    """``(train, validation)``: ``n_images`` images of the encoded training split drawn with ``seed`` (a function of
    the options only, so a resumed run holds out the same images) become the validation split and leave training.

    Both keep split order; together they are the training split.  Their counts record the hold-out.
    """
    n = len(train)
    if not 0 < n_images < n:
        raise UsageError(f"--validation_images {n_images}: the {dataset_name} training split has {n} readable images")
    held = np.sort(np.random.default_rng(seed).permutation(n)[:n_images])
    kept = np.setdiff1d(np.arange(n), held)  # sorted
    training, validation = subset_encoded(train, kept, train.split.name), subset_encoded(train, held, "validation")
    training.counts = {**train.counts, "used": len(kept), "held_out_for_validation": n_images}
    validation.counts = {"listed": n_images, "missing": 0, "unreadable": 0, "used": n_images, "held_out_of": "train"}
    return training, validation


def validation_is_test(dataset):
    """Whether the data set's validation split is its test split (same images: Conceptual Captions, the
    evaluation-only data sets)."""
    return dataset.cache_split("validation") == dataset.cache_split("test")


def training_splits(experiment, device):
    """``(train, validation, test)`` encoded splits of a run.

    ``--validation_images N`` validates on N held-out training images (``hold_out``); otherwise validation is
    the data set's validation split, with a one-line warning where that is its test split.
    """
    opts = experiment.config
    if opts.validation_images and opts.validation_images < opts.eval_candidates:  # before any cache is built
        raise UsageError(f"--validation_images {opts.validation_images} must be 0 or at least --eval_candidates "
                         f"{opts.eval_candidates} (each held-out target meets that many candidates)")  # fmt: skip
    others = experiment.extra_retrievers

    def encoded(name):
        return with_extra_retrievers(encode_split(experiment, name, device, other_retrievers=others))

    train = encoded("train")
    if opts.validation_images:
        train, validation = hold_out(train, opts.validation_images, opts.eval_seed, opts.dataset)
        print(f"data {opts.dataset} validation: {len(validation)} training images held out (--validation_images, "
              f"drawn with --eval_seed {opts.eval_seed}), training on the other {len(train)}", flush=True)  # fmt: skip
    else:
        if validation_is_test(experiment.dataset) and opts.distributed_context.is_leader:  # once per run
            print(f"# warning: {opts.dataset}'s validation split is its test split: validating each epoch (and any "
                  "early stopping or checkpoint choice on it) sees the test images; --validation_images N validates "
                  "on N held-out training images instead", file=sys.stderr, flush=True)  # fmt: skip
        validation = encoded("validation")
    return train, validation, encoded("test")


def write_data_counts(directory, encoded_splits):
    """Writes each split's image counts (used, missing, unreadable) into the run directory."""
    counts = {dataset.split.name: dataset.counts for dataset in encoded_splits}
    atomic_write_text(json.dumps(counts, indent=2), os.path.join(directory, "data_counts.json"))
