"""What the readers of real data sets share: where a data set lives, reading its annotation files, and a split
made of image files with the absent ones counted and left out.

A data set lives in ``--data_root``; by default in ``$DISCRITUNE_DATA/<directory>`` (``DISCRITUNE_DATA``
defaults to ``~/data``), with the directory named in ``DEFAULT_DIRECTORIES``.
"""

import dataclasses
import json
import os
from typing import Callable, Dict

from ..runtime.errors import UsageError
from .images import ImageFiles, existing_files
from .splits import ImageSplit

SPLITS = ("train", "validation", "test")
DATA_ENV = "DISCRITUNE_DATA"
DEFAULT_DIRECTORIES = {
    "conceptual": "conceptual_captions",
    "coco": "coco",
    "flickr": "flickr30k",
    "nocaps_near": "nocaps",
    "nocaps_out": "nocaps",
    "concadia_captions": "concadia",
    "concadia_descriptions": "concadia",
    "imagecode": "imagecode",
}
# What each data set cannot be read without, under its root: (what, [glob patterns, any one of which will do]).
REQUIRED_FILES = {
    "conceptual": [("training data", ["train/*.tar", "Train_GCC-training.tsv"]),
                   ("validation data", ["validation/*.tar", "val/*.tar", "Validation_GCC-1.1.0-Validation.tsv"])],
    "coco": [("Karpathy split file", ["dataset_coco.json"])],
    "flickr": [("Karpathy split file", ["dataset_flickr30k.json"])],
    "nocaps_near": [("annotations", ["nocaps_val_4500_captions.json"])],
    "nocaps_out": [("annotations", ["nocaps_val_4500_captions.json"])],
    "concadia_captions": [("split file", ["wiki_split.json"])],
    "concadia_descriptions": [("split file", ["wiki_split.json"])],
    "imagecode": [("annotations", ["valid_data.json"])],
}  # fmt: skip
MODELS_ENV = "DISCRITUNE_MODELS"
DOWNLOAD_HINT = "python data_scripts/download.py {dataset} prints what to download and where to put it"


def data_base():
    """``$DISCRITUNE_DATA``, or ``~/data`` when the variable is unset."""
    return os.environ.get(DATA_ENV) or os.path.join(os.path.expanduser("~"), "data")


def default_data_root(dataset):
    """``$DISCRITUNE_DATA/<directory>`` (``~/data/<directory>`` when the variable is unset)."""
    return os.path.join(data_base(), DEFAULT_DIRECTORIES[dataset])


def models_directory():
    """Where released model files named by a game file are looked for: ``$DISCRITUNE_MODELS``, or
    ``$DISCRITUNE_DATA/models`` (``~/data/models``)."""
    return os.environ.get(MODELS_ENV) or os.path.join(data_base(), "models")


def required_files(dataset):
    """``[(what, [patterns])]``: the files ``dataset`` cannot be read without, as glob patterns under its root."""
    return REQUIRED_FILES.get(dataset, [])


def data_root(opts):
    """The directory of the ``--dataset``: ``--data_root`` or its default; it must exist."""
    root = opts.data_root or default_data_root(opts.dataset)
    if not os.path.isdir(root):
        raise UsageError(f"{opts.dataset}: data directory {root} not found (--data_root; {hint(opts.dataset)})")
    return root


def hint(dataset):
    return DOWNLOAD_HINT.format(dataset=dataset)


def read_json(path, dataset):
    """A data set's JSON annotation file; a missing or malformed one is a one-line error."""
    if not os.path.isfile(path):
        raise UsageError(f"{dataset}: annotation file {path} not found ({hint(dataset)})")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"{dataset}: cannot read {path}: {error}") from None


def require(condition, path, dataset, what):
    """A one-line error when an annotation file does not have the documented layout."""
    if not condition:
        raise UsageError(f"{dataset}: {path} is not {what} (see docs/datasets.md)")


def file_split(name, records, image_directory):
    """An ``ImageSplit`` of ``records`` = ``[(id, file name under image_directory, references)]``.

    Records whose file is absent are left out and counted in ``split.missing`` (one directory listing per
    folder, not a ``stat`` per image).
    """
    listings = {}
    kept = []
    for record in records:
        path = os.path.join(image_directory, record[1])
        folder, base = os.path.split(path)
        if folder not in listings:
            listings[folder] = existing_files(folder)
        if base in listings[folder]:
            kept.append((record[0], path, record[2]))
    paths = [path for _, path, _ in kept]
    return ImageSplit(
        name,
        ImageFiles(paths),
        [list(references) for _, _, references in kept],
        ids=[str(image_id) for image_id, _, _ in kept],
        sources=paths,
        missing=len(records) - len(kept),
    )


class RealDataset:
    """A data set read from disk: ``split(name)`` reads a split on first use (``readers[source]()``).

    ``aliases`` maps a split to the one it shares its images with (Conceptual Captions tests on its validation
    data; evaluation-only data sets have one set of images), so they are read and cached once.
    """

    def __init__(self, name: str, root: str, readers: Dict[str, Callable[[], ImageSplit]], aliases=None):
        self.name = name
        self.root = root
        self.readers = readers
        self.aliases = aliases or {}
        self._splits: Dict[str, ImageSplit] = {}

    def cache_split(self, name):
        """The split whose images (and feature cache) split ``name`` uses."""
        return self.aliases.get(name, name)

    def split(self, name) -> ImageSplit:
        """The ``train``, ``validation`` or ``test`` split."""
        source = self.cache_split(name)
        if source not in self._splits:
            self._splits[source] = self.readers[source]()
        return dataclasses.replace(self._splits[source], name=name)

    def model_defaults(self, opts):
        """Real data sets bring no models: the released ones are used."""
        return {}


def evaluation_only(name, root, read: Callable[[], ImageSplit]):
    """An evaluation-only data set, whose one set of images serves as every split (read and cached once)."""
    return RealDataset(name, root, {"test": read}, aliases={"train": "test", "validation": "test"})
