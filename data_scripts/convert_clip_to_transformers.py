"""Converts an OpenAI CLIP (ViT) file to a transformers CLIP directory, for ``--clip_backend transformers``.

    python data_scripts/convert_clip_to_transformers.py ViT-B-32.pt clip-vit-b32-transformers/

The input is a released CLIP file (a TorchScript archive such as ``~/.cache/clip/ViT-B-32.pt``) or a state dict
saved with ``torch.save``; the output holds the weights, CLIP's own BPE tokenizer and image processor.  Both
backends then give the same match scores (checked in ``tests/test_real_models.py``).
"""

import argparse
import os
import sys

from egg.zoo.discriminative_captioner.clip_models import load_clip
from egg.zoo.discriminative_captioner.errors import UsageError
from egg.zoo.discriminative_captioner.retrievers.clip_conversion import save_as_transformers


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="OpenAI CLIP .pt file, or a name such as ViT-B/32 (downloaded if needed)")
    parser.add_argument("output", help="directory to write the transformers model into")
    args = parser.parse_args(argv)
    model, _ = load_clip(args.source, "source")
    save_as_transformers(model.state_dict(), args.output)
    print(f"wrote {os.path.abspath(args.output)}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as error:
        sys.exit(f"error: {error}")
