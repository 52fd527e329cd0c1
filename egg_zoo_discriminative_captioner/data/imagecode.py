"""ImageCoDe validation sets (``valid_data.json``): sets of 10 similar images, some with a description.

Layout under ``--data_root``: ``valid_data.json`` (``{set: {"<target index>": description}}``) and
``image-sets/<set>/img<X>.jpg``, 10 images per set, indexed 0-9 in the order of the integer X (frame numbers for
video sets).  Each image of each set is one image of the split, with id ``<set>/<index>`` and the descriptions
naming it as the target as its references (most images have none).  The images of a set are consecutive.
An evaluation-only data set: train, validation and test are the same images.
"""

import os
import re

from .files import data_root, evaluation_only, file_split, read_json, require
from .images import existing_files

IMAGES_PER_SET = 10


def set_images(directory):
    """The image file names of one set, ordered by the integer after "img"."""
    names = [name for name in existing_files(directory) if re.fullmatch(r"img\d+\.\w+", name)]
    return sorted(names, key=lambda name: int(re.search(r"\d+", name).group()))


def load_imagecode(opts):
    """Registry entry for ``--dataset imagecode``."""
    root = data_root(opts)
    path = os.path.join(root, "valid_data.json")
    annotations = read_json(path, "imagecode")
    require(isinstance(annotations, dict) and all(isinstance(v, dict) for v in annotations.values()), path,
            "imagecode", 'an ImageCoDe file ({"<set>": {"<target index>": "<description>"}})')  # fmt: skip
    records = []
    for set_name, descriptions in sorted(annotations.items()):
        names = set_images(os.path.join(root, "image-sets", set_name))
        names += [f"missing-img{index}" for index in range(len(names), IMAGES_PER_SET)]  # counted as missing
        for index, name in enumerate(names[:IMAGES_PER_SET]):
            references = [descriptions[str(index)].strip()] if str(index) in descriptions else []
            records.append((f"{set_name}/{index}", os.path.join(set_name, name), references))
    return evaluation_only("imagecode", root, lambda: file_split("test", records, os.path.join(root, "image-sets")))


def image_sets(split):
    """ImageCoDe's own retrieval sets in ``split``: ``[(indices, target)]``, one per described image, the 10 images
    of its set in order and the target's position among them; sets with an unreadable image are left out."""
    members = {}
    for position, image_id in enumerate(split.ids):
        set_name, index = image_id.rsplit("/", 1)
        members.setdefault(set_name, {})[int(index)] = position
    sets = []
    for images in members.values():
        if len(images) != IMAGES_PER_SET:
            continue
        indices = [images[index] for index in range(IMAGES_PER_SET)]
        sets += [(indices, target) for target, position in enumerate(indices) if split.references[position]]
    return sets
