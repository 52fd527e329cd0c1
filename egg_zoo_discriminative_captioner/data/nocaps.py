"""nocaps validation (``nocaps_val_4500_captions.json``, COCO-style), split by each image's ``domain``.

Layout under ``--data_root``: ``nocaps_val_4500_captions.json`` and ``validation/<file_name>``.  ``nocaps_near``
holds the "near-domain" images, ``nocaps_out`` the "out-domain" ones, each with all its captions (10 per image).
An evaluation-only data set: train, validation and test are the same images.
"""

import os
from collections import defaultdict

from .files import data_root, evaluation_only, file_split, read_json, require

ANNOTATIONS = "nocaps_val_4500_captions.json"
DOMAINS = {"nocaps_near": "near-domain", "nocaps_out": "out-domain"}


def load_nocaps(opts):
    """Registry entry for ``--dataset nocaps_near`` and ``--dataset nocaps_out``."""
    root = data_root(opts)
    path = os.path.join(root, ANNOTATIONS)
    annotations = read_json(path, opts.dataset)
    require(isinstance(annotations, dict) and isinstance(annotations.get("images"), list)
            and isinstance(annotations.get("annotations"), list), path, opts.dataset,
            'a nocaps caption file ({"images": [...], "annotations": [...]})')  # fmt: skip
    captions = defaultdict(list)
    for annotation in annotations["annotations"]:
        captions[annotation["image_id"]].append(annotation["caption"].strip())
    domain = DOMAINS[opts.dataset]
    records = [(image["id"], image["file_name"], captions[image["id"]])
               for image in annotations["images"] if image.get("domain") == domain]  # fmt: skip
    return evaluation_only(opts.dataset, root, lambda: file_split("test", records, os.path.join(root, "validation")))
