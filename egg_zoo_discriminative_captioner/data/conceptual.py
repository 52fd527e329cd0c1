"""Conceptual Captions: img2dataset webdataset shards, or the released TSVs with the images next to them.

Layout under ``--data_root`` (for each of ``train/`` and ``validation/``, shards win when both are there):

    train/*.tar, validation/*.tar    img2dataset webdataset shards: {key}.jpg, {key}.txt (caption), {key}.json
    Train_GCC-training.tsv           caption <TAB> URL, no header (3,318,333 rows)
    Validation_GCC-1.1.0-Validation.tsv   (15,840 rows)
    train/00000000.jpg, ...          with the TSVs: the image of TSV row i (0-based) as {i:08d}.jpg

The validation directory is ``validation/`` (the authors' loader) or ``val/`` (ClipCap's ``parse_conceptual.py``),
for shards and for images alike; ``validation/`` wins when both hold data, and the one read is printed.

Training reads the training data; validation and test both read the validation data, which the paper uses as
its test set (hyperparameters were tuned on Flickr).  Rows whose image is absent (dead URLs) count as missing.
"""

import csv
import glob
import os

from ..runtime.errors import UsageError
from .files import RealDataset, data_root, file_split, hint
from .images import TarImages, read_member_text, read_shard
from .splits import ImageSplit

TSV_FILES = {"train": "Train_GCC-training.tsv", "validation": "Validation_GCC-1.1.0-Validation.tsv"}
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
SOURCE_DIRECTORIES = ("train", "validation")
DIRECTORY_NAMES = {"train": ("train",), "validation": ("validation", "val")}  # val/: ClipCap's layout


def read_tsv(path):
    """The captions of a Conceptual Captions TSV, one per row (caption <TAB> URL, no header)."""
    with open(path, encoding="utf-8", newline="") as f:
        return [row[0].strip() for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]


def shard_split(name, shards):
    """A split of every sample of the ``shards`` that has an image; samples without one count as missing.

    The caption is the sample's ``.txt``.  A damaged shard contributes the samples before the damage.
    """
    members, references, ids, sources, missing, damaged = [], [], [], [], 0, []
    for shard in shards:
        samples, readable = read_shard(shard)
        if not readable:
            damaged.append(os.path.basename(shard))
        for key, files in samples.items():
            image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
            if image is None:
                missing += 1
                continue
            members.append(image)
            references.append([read_member_text(files["txt"]).strip()] if "txt" in files else [])
            ids.append(os.path.basename(key))
            sources.append(f"{shard}:{key}")
    if damaged:
        print(f"conceptual {name}: damaged shards (read up to the damage): {', '.join(damaged)}", flush=True)
    return ImageSplit(name, TarImages(members), references, ids=ids, sources=sources, missing=missing)


def tsv_split(name, tsv, image_directory):
    """A split of the TSV's rows whose image ``{row:08d}.jpg`` was downloaded into ``image_directory``."""
    records = [(f"{row:08d}", f"{row:08d}.jpg", [caption]) for row, caption in enumerate(read_tsv(tsv))]
    return file_split(name, records, image_directory)


def read_split(root, source):
    """The ``source`` split: webdataset shards in its directory, else the TSV with the images beside it."""
    directories = [os.path.join(root, name) for name in DIRECTORY_NAMES[source]]
    for directory in directories:
        shards = sorted(glob.glob(os.path.join(directory, "*.tar")))
        if shards:
            report(source, directories, directory, f"{len(shards)} webdataset shards")
            return shard_split(source, shards)
    tsv = os.path.join(root, TSV_FILES[source])
    if os.path.isfile(tsv):
        directory = next((d for d in directories if os.path.isdir(d)), directories[0])
        report(source, directories, directory, f"the images of {os.path.basename(tsv)}")
        return tsv_split(source, tsv, directory)
    shown = " or ".join(f"{d}/*.tar" for d in directories)
    raise UsageError(f"conceptual: neither {shown} shards nor {tsv} found ({hint('conceptual')})")


def report(source, directories, directory, what):
    """One line naming the directory read, where there is a choice (validation/ or ClipCap's val/)."""
    if len(directories) > 1:
        others = [d for d in directories if d != directory and os.path.isdir(d)]
        ignored = f"; {', '.join(o + '/' for o in others)} ignored" if others else ""
        print(f"conceptual {source}: {what} in {directory}/{ignored}", flush=True)


def load_conceptual(opts):
    """Registry entry for ``--dataset conceptual``."""
    root = data_root(opts)
    readers = {source: (lambda source=source: read_split(root, source)) for source in SOURCE_DIRECTORIES}
    return RealDataset("conceptual", root, readers, aliases={"test": "validation"})
