"""Captions your own images: ``python -m egg.zoo.discriminative_captioner.caption IMAGES... [--model SPEC]``.

IMAGES are image files, folders (every image file in them, recursively) or glob patterns.  ``--model`` takes any
captioner ``evaluate --models`` takes (default: the pretrained one the options describe; a run directory,
``RUN/final.tar`` or ``RUN/clipcap.pt`` for a finetuned run, which brings its own captioner options and needs no
data set; ``hf:REPO_ID`` for one pushed to the Hugging Face Hub).  Captions come from beam search (``--num_beams``, at most ``--max_len``
tokens), ``--batch_size`` images at a time; they are printed (``path<TAB>caption``) or, with ``--output F.jsonl``,
written as JSON lines ``{"image": path, "caption": ...}`` (never over an existing file unless ``--overwrite``).
Unreadable images are reported and skipped.
"""

import glob
import json
import os
import sys

from .data import OWN_MODELS
from .options.parse import get_opts
from .runtime.errors import UsageError, run_command

PROG = "python -m egg.zoo.discriminative_captioner.caption"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def add_caption_options(parser):
    group = parser.add_argument_group("captioning your images")
    group.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    group.add_argument("--model", default="pretrained", metavar="SPEC", help="captioner: 'pretrained', a run "
                       "directory, RUN/final.tar, a ClipCap .pt file, a BLIP directory, or hf:DIR / hf:REPO_ID (a "
                       "transformers captioner, or a Hub repository pushed from a run)")  # fmt: skip
    group.add_argument("--output", default=None, help="write JSON lines here instead of printing (a new file, "
                       "unless --overwrite)")  # fmt: skip


def expand_images(patterns):
    """``(paths, missing)``: the image files that ``patterns`` name, in order and without repeats, and ``(pattern,
    why)`` for each pattern that names none."""
    paths, missing = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(pattern)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            why = f"a folder without image files ({', '.join(IMAGE_EXTENSIONS)})"
        elif os.path.isfile(pattern):
            found, why = [pattern], None
        else:
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            why = "no such image file, folder or matching glob"
        if not found:
            missing.append((pattern, why))
        paths += found
    return list(dict.fromkeys(paths)), missing


def main(params):
    """Captions the images; returns the rows ``{"image", "caption"}``."""
    opts = get_opts(params, prog=PROG, description=__doc__.splitlines()[0], extra_options=add_caption_options,
                    command="caption")  # fmt: skip
    if opts.batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {opts.batch_size}")
    if opts.output and os.path.exists(opts.output) and not opts.overwrite:
        raise UsageError(f"--output {opts.output} exists: choose another file, or pass --overwrite to replace it")
    from .evaluation.models import build_model, parse_model

    spec = parse_model(opts.model, flag="--model")  # a bad model folder is said before the images are listed
    paths, missing = expand_images(opts.images)
    for pattern, why in missing:
        print(f"skipped {pattern}: {why}", file=sys.stderr, flush=True)
    if not paths:
        raise UsageError(f"no image files in {' '.join(opts.images)}: " + "; ".join(why for _, why in missing))
    from .data import load_dataset
    from .evaluation.image_captions import caption_images
    from .runtime.atomic import atomic_write_text
    from .runtime.preflight import check_files

    own_models = spec.kind == "pretrained" and opts.dataset in OWN_MODELS  # the synthetic world's captioner
    opts = check_files(opts, captioner=spec.kind == "pretrained" and not own_models, retriever=False)
    captioner = build_model(opts, spec, load_dataset(opts) if own_models else None)
    rows, skipped = caption_images(captioner, paths, opts.batch_size, opts.num_beams, opts.device)
    if not rows:  # nothing to write: the files named were none of them readable images
        raise UsageError(f"captioned no image: the {len(skipped)} files found could not be read as images (above)")
    if opts.output:
        atomic_write_text("".join(json.dumps(row) + "\n" for row in rows), opts.output)
    else:
        for row in rows:
            print(f"{row['image']}\t{row['caption']}", flush=True)
    print(f"captioned {len(rows)} images, skipped {len(skipped) + len(missing)}", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    run_command(main)
