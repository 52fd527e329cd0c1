"""ImageCoDe validation sets (``valid_data.json``): sets of 10 similar images, some with a description.

Layout under ``--data_root``: ``valid_data.json`` (``{set: {"<target index>": description}}``) and
``image-sets/<set>/img<X>.jpg``, 10 images per set.  Static sets (names containing ``open-images``, as the
authors' loader tells them apart) hold ``img0``-``img9``: X is the index.  Video sets hold 10 frames whose X is the
frame number, indexed 0-9 in frame order.  Each image of each set is one image of the split, with id
``<set>/<index>`` and the descriptions naming it as the target as its references (most images have none).  The
images of a set are consecutive.

An absent file never moves another image: a static set's absent image counts as missing and the others keep
their index; a video set with fewer (or more) than 10 frames cannot be re-indexed, so its 10 images count as
missing (one line names these sets).  An evaluation-only data set: train, validation and test are the same images.
"""

import os
import re

from .files import data_root, evaluation_only, file_split, read_json, require
from .images import existing_files

IMAGES_PER_SET = 10
IMAGE_NAME = re.compile(r"img(\d+)\.\w+")


def is_video_set(set_name):
    """Whether a set holds video frames (the authors' test: every static set comes from Open Images)."""
    return "open-images" not in set_name


def set_images(directory):
    """The image file names of one set, ordered by the integer after "img"."""
    names = [name for name in existing_files(directory) if IMAGE_NAME.fullmatch(name)]
    return sorted(names, key=lambda name: int(IMAGE_NAME.fullmatch(name).group(1)))


def indexed_images(set_name, directory):
    """``[file name of image 0, ..., of image 9]`` of one set, an absent image's name being one with no file, and
    whether the set could be indexed (False: a video set without exactly 10 frames, all of whose images count as
    missing)."""
    names = set_images(directory)
    if is_video_set(set_name):
        if len(names) == IMAGES_PER_SET:
            return names, True
        return [f"missing-img{index}" for index in range(IMAGES_PER_SET)], False  # frame order unknown
    by_index = {int(IMAGE_NAME.fullmatch(name).group(1)): name for name in names}
    return [by_index.get(index, f"img{index}.jpg") for index in range(IMAGES_PER_SET)], True


def load_imagecode(opts):
    """Registry entry for ``--dataset imagecode``."""
    root = data_root(opts)
    path = os.path.join(root, "valid_data.json")
    annotations = read_json(path, "imagecode")
    require(isinstance(annotations, dict) and all(isinstance(v, dict) for v in annotations.values()), path,
            "imagecode", 'an ImageCoDe file ({"<set>": {"<target index>": "<description>"}})')  # fmt: skip

    def read():
        records, unindexed = [], []
        for set_name, descriptions in sorted(annotations.items()):
            names, indexed = indexed_images(set_name, os.path.join(root, "image-sets", set_name))
            if not indexed:
                unindexed.append(set_name)
            for index, name in enumerate(names):
                references = [descriptions[str(index)].strip()] if str(index) in descriptions else []
                records.append((f"{set_name}/{index}", os.path.join(set_name, name), references))
        if unindexed:
            shown = ", ".join(unindexed[:5]) + (", ..." if len(unindexed) > 5 else "")
            print(f"ImageCoDe: {len(unindexed)} video sets without all {IMAGES_PER_SET} frames left out (their "
                  f"images count as missing; frames cannot be re-indexed): {shown}", flush=True)  # fmt: skip
        return file_split("test", records, os.path.join(root, "image-sets"))

    return evaluation_only("imagecode", root, read)


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
