"""Data sets and batching.

``DATASETS`` maps each ``--dataset`` name to the function that loads it (imported only when chosen).  A loaded
data set offers ``split(name) -> ImageSplit`` for "train", "validation" and "test", and ``model_defaults(opts)``:
option values for the models that belong with it (only the built-in synthetic world has any).  The real data
sets are read from ``--data_root`` (default: ``$DISCRITUNE_DATA/<directory>``, see ``files.DEFAULT_DIRECTORIES``)
in their published formats, one reader module each.
"""

from ..runtime.errors import UsageError
from ..runtime.lazy import exports, load

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
    "hf": (".hf_datasets", "load_hf"),  # any image-caption data set of the Hugging Face hub (--hf_dataset)
}


OWN_MODELS = {"synthetic", "synthetic_descriptive"}  # data sets that bring their own models (model_defaults)
_EXPORTS = {
    name: ".base"
    for name in ("EncodedSplit", "ImageSplit", "TransformedImages", "collate_game_batch", "encode_images",
                 "retrieval_batches", "retrieval_loader", "training_loader")
}  # fmt: skip


def check_batch_size(batch_size):
    """In-batch distractors need at least two images per batch (the samplers' check, and the options')."""
    if batch_size < 2:
        raise UsageError(
            f"--batch_size {batch_size} leaves no distractors: a batch of B images gives each target B - 1"
        )


def load_dataset(opts):
    """The data set named by ``--dataset``."""
    return load(__name__, DATASETS[opts.dataset])(opts)


__getattr__ = exports(__name__, _EXPORTS)  # the classes load on first use (PEP 562)


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
