"""Data sets and batching.

``DATASETS`` maps each ``--dataset`` name to the function that loads it (imported only when chosen).  A loaded
data set offers ``split(name) -> ImageSplit`` for "train", "validation" and "test", and ``model_defaults(opts)``:
option values for the models that belong with it (only the built-in synthetic world has any).  The real data
sets are read from ``--data_root`` (default: ``$DISCRITUNE_DATA/<directory>``, see ``files.DEFAULT_DIRECTORIES``)
in their published formats, one reader module each.
"""

import importlib

from .base import (
    EncodedSplit,
    ImageSplit,
    TransformedImages,
    collate_game_batch,
    encode_images,
    retrieval_batches,
    retrieval_loader,
    training_loader,
)
from .samplers import check_batch_size

DATASETS = {
    "synthetic": ("..synthetic", "load_dataset"),
    "conceptual": (".conceptual", "load_conceptual"),
    "coco": (".karpathy", "load_coco"),
    "flickr": (".karpathy", "load_flickr"),
    "nocaps_near": (".nocaps", "load_nocaps"),
    "nocaps_out": (".nocaps", "load_nocaps"),
    "concadia_captions": (".concadia", "load_concadia"),
    "concadia_descriptions": (".concadia", "load_concadia"),
    "imagecode": (".imagecode", "load_imagecode"),
    "synthetic_descriptive": ("..synthetic", "load_descriptive_dataset"),
}


def load_dataset(opts):
    """The data set named by ``--dataset``."""
    module_name, function = DATASETS[opts.dataset]
    return getattr(importlib.import_module(module_name, package=__name__), function)(opts)


__all__ = [
    "DATASETS",
    "EncodedSplit",
    "ImageSplit",
    "TransformedImages",
    "check_batch_size",
    "collate_game_batch",
    "encode_images",
    "load_dataset",
    "retrieval_batches",
    "retrieval_loader",
    "training_loader",
]
