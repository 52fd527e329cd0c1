"""Captions your own images: ``python -m egg.zoo.discriminative_captioner.caption IMAGES... [--model SPEC]``.

IMAGES are image files, folders (every image file in them, recursively) or glob patterns.  ``--model`` takes any
captioner ``evaluate --models`` takes (default: the pretrained one the options describe; ``RUN/final.tar`` or
``RUN/clipcap.pt`` for a finetuned run).  Captions come from beam search (``--num_beams``, at most ``--max_len``
tokens), ``--batch_size`` images at a time; they are printed (``path<TAB>caption``) or, with ``--output F.jsonl``,
written as JSON lines ``{"image": path, "caption": ...}``.  Unreadable images are reported and skipped.
"""

import copy
import glob
import json
import os
import sys

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .checkpointing import atomic_write_text
from .data import load_dataset
from .errors import UsageError, run_command
from .evaluate import build_model, parse_model
from .opts import apply_model_defaults, get_opts
from .retrievers import build_retriever

PROG = "python -m egg.zoo.discriminative_captioner.caption"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def add_caption_options(parser):
    group = parser.add_argument_group("captioning your images")
    group.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    group.add_argument("--model", default="pretrained", metavar="SPEC", help="captioner (as evaluate --models)")
    group.add_argument("--output", default=None, help="write JSON lines here instead of printing")


def expand_images(patterns):
    """``(paths, missing)``: the image files that ``patterns`` name, in order and without repeats, and the
    patterns that name nothing."""
    paths, missing = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(pattern)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not found:
            missing.append(pattern)
        paths += found
    return list(dict.fromkeys(paths)), missing


def read_image(path):
    """The image as RGB, or the reason it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"


@torch.no_grad()
def caption_images(captioner, paths, batch_size=32, num_beams=5, device="cpu"):
    """``(rows, skipped)``: ``{"image", "caption"}`` per readable image, ``(path, reason)`` per unreadable one."""
    rows, skipped = [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="captioning", unit="batch"):
        batch, pixels = [], []
        for path in paths[start : start + batch_size]:
            image, error = read_image(path)
            if image is None:
                skipped.append((path, error))
                print(f"skipped {path}: {error}", file=sys.stderr, flush=True)
                continue
            batch.append(path)
            pixels.append(captioner.image_transform(image))
        if not batch:
            continue
        inputs = torch.stack(pixels).to(device)
        if captioner.cache_inputs:
            inputs = captioner.encode_images(inputs)
        texts = captioner.generate(inputs, num_beams=num_beams).text
        rows += [{"image": path, "caption": text} for path, text in zip(batch, texts)]
    return rows, skipped


def main(params):
    """Captions the images; returns the rows ``{"image", "caption"}``."""
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0], extra_options=add_caption_options,
                    training=False)  # fmt: skip
    if opts.batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {opts.batch_size}")
    paths, missing = expand_images(opts.images)
    for pattern in missing:
        print(f"skipped {pattern}: no such image file, folder or matching glob", file=sys.stderr, flush=True)
    if not paths:
        raise UsageError("no image files found in " + " ".join(opts.images))
    spec = parse_model(opts.model)
    dataset = load_dataset(opts)  # the data set's own models are the defaults, as in train and evaluate
    retriever = None
    if spec.kind == "checkpoint":  # the game that loads the checkpoint holds a retriever
        retriever = build_retriever(apply_model_defaults(copy.copy(opts), dataset)).to(opts.device)
    captioner = build_model(opts, spec, dataset, retriever)
    rows, skipped = caption_images(captioner, paths, opts.batch_size, opts.num_beams, opts.device)
    if opts.output:
        atomic_write_text("".join(json.dumps(row) + "\n" for row in rows), opts.output)
    else:
        for row in rows:
            print(f"{row['image']}\t{row['caption']}", flush=True)
    print(f"captioned {len(rows)} images, skipped {len(skipped) + len(missing)}", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    run_command(main)
