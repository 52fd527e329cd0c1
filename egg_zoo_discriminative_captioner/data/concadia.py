"""Concadia (``wiki_split.json``): Wikipedia images with their caption and their description (alt text).

Layout under ``--data_root``: ``wiki_split.json`` and ``images/<filename>``.  ``concadia_captions`` takes each
entry's ``caption.raw`` as its reference, ``concadia_descriptions`` its ``description.raw``.  Splits: train,
val (validation) and test, as in the file; the paper evaluates on test.
"""

import os

from .files import RealDataset, data_root, file_split, read_json, require

FIELDS = {"concadia_captions": "caption", "concadia_descriptions": "description"}
CONCADIA_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def load_concadia(opts):
    """Registry entry for ``--dataset concadia_captions`` and ``--dataset concadia_descriptions``."""
    root = data_root(opts)
    path = os.path.join(root, "wiki_split.json")
    annotations = read_json(path, opts.dataset)
    require(isinstance(annotations, dict) and isinstance(annotations.get("images"), list), path, opts.dataset,
            'a Concadia split file ({"images": [...]})')  # fmt: skip
    field = FIELDS[opts.dataset]

    def read(split):
        records = [(os.path.splitext(entry["filename"])[0], entry["filename"], [entry[field]["raw"].strip()])
                   for entry in annotations["images"] if entry.get("split") == CONCADIA_SPLITS[split]]  # fmt: skip
        return file_split(split, records, os.path.join(root, "images"))

    return RealDataset(opts.dataset, root, {split: (lambda split=split: read(split)) for split in CONCADIA_SPLITS})
