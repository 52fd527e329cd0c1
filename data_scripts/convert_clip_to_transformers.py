"""Converts an OpenAI CLIP (ViT) file to a transformers CLIP directory, for ``--clip_backend transformers``.

    python data_scripts/convert_clip_to_transformers.py ViT-B-32.pt clip-vit-b32-transformers/

The input is a released CLIP file (a TorchScript archive such as ``~/.cache/clip/ViT-B-32.pt``) or a state dict
saved with ``torch.save``; the output holds the weights, CLIP's own BPE tokenizer and image processor.  Both
backends then give the same match scores (checked in ``tests/captioners/test_real_models.py``).  The directory is
written beside its destination and moved into place once complete, so an interrupted conversion leaves nothing
behind; an existing non-empty output is left alone unless ``--overwrite``.
"""

import argparse
import os

from egg.zoo.discriminative_captioner.runtime.errors import UsageError, run_command


def check_output(path, overwrite):
    """Refuses an output that is a file, or a non-empty directory without ``overwrite``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise UsageError(f"{path} exists and is not empty: pass --overwrite to replace it, or choose another output")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.replace("``", ""),  # reST quotes, not for a terminal
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="OpenAI CLIP .pt file, or a name such as ViT-B/32 (downloaded if needed)")
    parser.add_argument("output", help="directory to write the transformers model into")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    args = parser.parse_args(argv)
    check_output(args.output, args.overwrite)  # before the slow part: loading CLIP
    from egg.zoo.discriminative_captioner.retrievers.clip_conversion import save_as_transformers
    from egg.zoo.discriminative_captioner.runtime.atomic import atomic_directory
    from egg.zoo.discriminative_captioner.runtime.clip_loading import load_clip

    model, _ = load_clip(args.source, "source")
    with atomic_directory(args.output) as staging:
        save_as_transformers(model.state_dict(), staging)
    print(f"wrote {os.path.abspath(args.output)}")


if __name__ == "__main__":
    run_command(main)
