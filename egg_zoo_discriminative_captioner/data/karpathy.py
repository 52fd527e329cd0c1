"""COCO and Flickr30k with Karpathy's splits (``dataset_coco.json``, ``dataset_flickr30k.json``).

Layout under ``--data_root``:

    coco:    dataset_coco.json, train2014/, val2014/        image = <root>/<filepath>/<filename>
    flickr:  dataset_flickr30k.json, Images/ (or flickr30k-images/)   image = <root>/Images/<filename>

Splits: COCO train = Karpathy train + restval, validation = val, test = test (5,000 each); Flickr train, val
(the paper's tuning set) and test.  References are every sentence's ``raw`` text; ids are COCO ids (COCO) or
file names (Flickr).
"""

import os

from .files import RealDataset, data_root, file_split, read_json, require

KARPATHY_SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}


def karpathy_records(annotations, path, dataset, split, image_id, relative_path):
    """``(id, path, references)`` of the images whose Karpathy ``split`` belongs to ``split``."""
    images = annotations.get("images") if isinstance(annotations, dict) else None
    require(isinstance(images, list), path, dataset, 'a Karpathy split file ({"images": [...]})')
    records = []
    for image in images:
        if image.get("split") in KARPATHY_SPLITS[split]:
            references = [sentence["raw"].strip() for sentence in image.get("sentences", [])]
            records.append((image_id(image), relative_path(image), references))
    return records


def load_coco(opts):
    """Registry entry for ``--dataset coco``."""
    root = data_root(opts)
    path = os.path.join(root, "dataset_coco.json")
    annotations = read_json(path, "coco")

    def read(split):
        records = karpathy_records(annotations, path, "coco", split, lambda image: image.get("cocoid", image["imgid"]),
                                   lambda image: os.path.join(image["filepath"], image["filename"]))  # fmt: skip
        return file_split(split, records, root)

    return RealDataset("coco", root, {split: (lambda split=split: read(split)) for split in KARPATHY_SPLITS})


def load_flickr(opts):
    """Registry entry for ``--dataset flickr``."""
    root = data_root(opts)
    path = os.path.join(root, "dataset_flickr30k.json")
    annotations = read_json(path, "flickr")
    folder = "Images" if os.path.isdir(os.path.join(root, "Images")) else "flickr30k-images"

    def read(split):
        records = karpathy_records(annotations, path, "flickr", split, lambda image: image["filename"],
                                   lambda image: image["filename"])  # fmt: skip
        return file_split(split, records, os.path.join(root, folder))

    return RealDataset("flickr", root, {split: (lambda split=split: read(split)) for split in KARPATHY_SPLITS})
