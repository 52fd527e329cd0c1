"""Tiny data sets written in their published on-disk formats (docs/datasets.md), with a few broken images.

Every fixture has, per split, some good JPEGs, one corrupted file (random bytes), one truncated JPEG and one
listed image whose file is absent; ``EXPECTED[name]`` gives what a reader must find.
"""

import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

GOOD = 8  # readable images per split


def jpeg_bytes(seed, size=32):
    """A small random-colour JPEG."""
    rng = np.random.default_rng(seed)
    array = np.zeros((size, size, 3), dtype=np.uint8) + rng.integers(0, 255, size=3, dtype=np.uint8)
    array[: size // 2] = rng.integers(0, 255, size=(size // 2, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_images(directory, names, seed):
    """Writes ``names``: all good except the last three, which are corrupted, truncated and absent."""
    os.makedirs(directory, exist_ok=True)
    for i, name in enumerate(names[:-3]):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(jpeg_bytes(seed + i))
    with open(os.path.join(directory, names[-3]), "wb") as f:
        f.write(np.random.default_rng(seed).bytes(500))  # corrupted
    with open(os.path.join(directory, names[-2]), "wb") as f:
        f.write(jpeg_bytes(seed + 99)[:200])  # truncated
    # names[-1] is listed but never downloaded


def write_karpathy(root, dataset):
    """``dataset_coco.json`` + ``train2014/``, ``val2014/``, or ``dataset_flickr30k.json`` + ``Images/``."""
    images, imgid = [], 0
    splits = ("train", "restval", "val", "test") if dataset == "coco" else ("train", "val", "test")  # no restval
    for split in splits:
        count = GOOD // 2 + 3 if dataset == "coco" and split in ("train", "restval") else GOOD + 3
        names = [f"COCO_{split}_{i:012d}.jpg" if dataset == "coco" else f"{1000 + imgid + i}.jpg" for i in range(count)]
        folder = ("train2014" if split in ("train", "restval") else "val2014") if dataset == "coco" else "Images"
        write_images(os.path.join(root, folder), names, seed=imgid)
        for name in names:
            entry = {"filename": name, "imgid": imgid, "split": split, "sentids": [imgid * 5 + j for j in range(5)],
                     "sentences": [{"tokens": ["a", "photo", str(j)], "raw": f"A photo {j} of image {imgid}.",
                                    "imgid": imgid, "sentid": imgid * 5 + j} for j in range(5)]}  # fmt: skip
            if dataset == "coco":
                entry.update(filepath=folder, cocoid=500000 + imgid)
            images.append(entry)
            imgid += 1
    name = "dataset_coco.json" if dataset == "coco" else "dataset_flickr30k.json"
    with open(os.path.join(root, name), "w") as f:
        json.dump({"images": images, "dataset": dataset}, f)


def write_conceptual_tsv(root):
    """The released TSVs (caption <TAB> URL, no header) with images ``{row:08d}.jpg`` in ``train/``, ``validation/``."""
    for split, tsv in (("train", "Train_GCC-training.tsv"), ("validation", "Validation_GCC-1.1.0-Validation.tsv")):
        rows = GOOD + 3
        with open(os.path.join(root, tsv), "w") as f:
            for i in range(rows):
                f.write(f"caption {i} of the {split} set\thttp://example.com/{split}/{i}.jpg\n")
        write_images(os.path.join(root, split), [f"{i:08d}.jpg" for i in range(rows)], seed=len(split))


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_conceptual_shards(root):
    """img2dataset's webdataset output: ``{split}/0000k.tar`` with ``{key}.jpg``, ``{key}.txt``, ``{key}.json``.

    Per split: two shards of good samples, one corrupted JPEG, one truncated JPEG, and one failed download
    (a key with ``.txt`` and ``.json`` only).
    """
    for split in ("train", "validation"):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        key = 0
        for shard in range(2):
            with tarfile.open(os.path.join(root, split, f"{shard:05d}.tar"), "w") as tar:
                for i in range(GOOD // 2 + (3 if shard else 0)):
                    name = f"{shard:05d}{key:04d}"
                    if shard and i == GOOD // 2:
                        image = np.random.default_rng(key).bytes(300)  # corrupted
                    elif shard and i == GOOD // 2 + 1:
                        image = jpeg_bytes(key)[:150]  # truncated
                    else:
                        image = jpeg_bytes(key)
                    if not (shard and i == GOOD // 2 + 2):  # the last one failed to download: no image
                        _add(tar, f"{name}.jpg", image)
                    _add(tar, f"{name}.txt", f"caption of {split} sample {key}".encode())
                    meta = {"key": name, "caption": f"caption {key}", "url": f"http://example.com/{key}.jpg"}
                    _add(tar, f"{name}.json", json.dumps(meta).encode())
                    key += 1


def write_nocaps(root):
    """``nocaps_val_4500_captions.json`` (COCO-style, with ``domain``) + ``validation/<file_name>``."""
    images, annotations = [], []
    domains = ["in-domain"] * 3 + ["near-domain"] * (GOOD + 3) + ["out-domain"] * (GOOD + 3)
    for i, domain in enumerate(domains):
        images.append({"id": i, "open_images_id": f"{i:016x}", "file_name": f"{i:016x}.jpg", "height": 32,
                       "width": 32, "domain": domain, "coco_url": "", "license": 0, "date_captured": ""})  # fmt: skip
    for j in range(10):  # annotations not grouped by image: a reader must match them by image_id
        for image in images:
            annotations.append({"image_id": image["id"], "id": len(annotations), "caption": f"{image['domain']} {j}"})
    for domain in ("in-domain", "near-domain", "out-domain"):
        names = [image["file_name"] for image in images if image["domain"] == domain]
        write_images(os.path.join(root, "validation"), names, seed=len(domain))
    with open(os.path.join(root, "nocaps_val_4500_captions.json"), "w") as f:
        json.dump({"info": {}, "licenses": [], "images": images, "annotations": annotations}, f)


def write_concadia(root):
    """``wiki_split.json`` (``{"images": [...]}``) + ``images/<filename>``."""
    entries, row = [], 0
    for split in ("train", "val", "test"):
        names = [f"{row + i}.jpg" for i in range(GOOD + 3)]
        write_images(os.path.join(root, "images"), names, seed=row)
        for name in names:
            text = lambda kind, name=name: {"raw": f"{kind} of {name}", "tokens": [kind, "of", name]}  # noqa: E731
            entries.append({"article_id": row // 4, "filename": name, "orig_filename": f"File:{name}",
                            "split": split, "caption": text("caption"), "description": text("description"),
                            "context": text("context")})  # fmt: skip
            row += 1
    with open(os.path.join(root, "wiki_split.json"), "w") as f:
        json.dump({"images": entries}, f)


def write_imagecode(root):
    """``valid_data.json`` + ``image-sets/<set>/img<X>.jpg``: a static set (``img0``-``img9``) whose ``img3`` was
    never downloaded, a video set (X = frame number) with all 10 frames, and a video set with a frame absent.

    The static set keeps every other image at the index its name gives (a corrupted ``img9``, a truncated
    ``img7``); the complete video set has a corrupted and a truncated frame; the incomplete one cannot be
    re-indexed, so its 10 images count as missing.
    """
    static = [f"img{i}.jpg" for i in (0, 1, 2, 4, 5, 6, 8, 9, 7, 3)]  # write_images: last three broken / absent
    video = [f"img{frame}.jpg" for frame in (3, 12, 25, 40, 51, 60, 77, 80, 95, 101)] + ["absent.jpg"]  # all 10 written
    incomplete = [f"img{frame}.jpg" for frame in (0, 8, 16, 24, 32, 40, 48, 56, 64)]  # 9 of 10 frames listed
    sets = {"open-images-1234": static, "MSR-VTT-video7": video, "video-storytelling-video9": incomplete}
    for n, (set_name, names) in enumerate(sets.items()):
        write_images(os.path.join(root, "image-sets", set_name), names, seed=10 * n)
    descriptions = {"open-images-1234": {"2": "the one with a red hat", "4": "a dog to the left"},
                    "MSR-VTT-video7": {"1": "the man starts to turn"},
                    "video-storytelling-video9": {"3": "the bride turns around"}}  # fmt: skip
    with open(os.path.join(root, "valid_data.json"), "w") as f:
        json.dump(descriptions, f)


WRITERS = {
    "coco": lambda root: write_karpathy(root, "coco"),
    "flickr": lambda root: write_karpathy(root, "flickr"),
    "conceptual": write_conceptual_shards,
    "nocaps_near": write_nocaps,
    "nocaps_out": write_nocaps,
    "concadia_captions": write_concadia,
    "concadia_descriptions": write_concadia,
    "imagecode": write_imagecode,
}

# Per data set and split: (listed, missing, unreadable) as the fixtures above write them.
EXPECTED = {
    "coco": {"train": (GOOD + 6, 2, 4), "validation": (GOOD + 3, 1, 2), "test": (GOOD + 3, 1, 2)},
    "flickr": {"train": (GOOD + 3, 1, 2), "validation": (GOOD + 3, 1, 2), "test": (GOOD + 3, 1, 2)},
    "conceptual": {"train": (GOOD + 3, 1, 2), "validation": (GOOD + 3, 1, 2), "test": (GOOD + 3, 1, 2)},
    "nocaps_near": {split: (GOOD + 3, 1, 2) for split in ("train", "validation", "test")},
    "nocaps_out": {split: (GOOD + 3, 1, 2) for split in ("train", "validation", "test")},
    "concadia_captions": {split: (GOOD + 3, 1, 2) for split in ("train", "validation", "test")},
    "concadia_descriptions": {split: (GOOD + 3, 1, 2) for split in ("train", "validation", "test")},
    "imagecode": {split: (30, 11, 4) for split in ("train", "validation", "test")},  # a video set of 10 missing
}
