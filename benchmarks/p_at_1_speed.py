"""Times text-to-image P@1 (100 candidates, every image scored) over 5,000 images from cached image features on
the CPU, excluding caption generation, against this project's budget of 30 seconds for scoring a 5,000-image
split.

    python benchmarks/p_at_1_speed.py [--images 5000] [--source cached|world] [--cache_dir DIR]

The timed part is scoring every target against its 99 distractors from cached embeddings (``--source cached``:
5,000 unit image and caption embeddings of CLIP ViT-B/32's width, 512).  ``--source world`` also times encoding
the captions (the alt-text of 5,000 images of the built-in world) with the world's CLIP text tower, image
features computed first and not timed; it builds the world once if it is not cached.  Encoding 5,000 captions with
a real-size CLIP text tower is a separate cost (about 29 TFLOP for ViT-B/32, minutes on a CPU) that ``evaluate``
pays once per caption set.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUDGET = 30.0


def world_inputs(n_images, cache_dir):
    """The world's CLIP, ``n_images`` images' embeddings (train split first rows) and their alt-text captions."""
    import clip

    from egg.zoo.discriminative_captioner.data import encode_images
    from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
    from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform
    from egg.zoo.discriminative_captioner.synthetic import load_world

    world = load_world(cache_dir, "default", progress=False)
    state = torch.load(os.path.join(world.directory, "retriever.pt"), map_location="cpu", weights_only=True)
    model = clip.model.build_model(state).float().eval()
    retriever = ClipRetriever(model, clip_transform(model.visual.input_resolution))
    split = world.split("train")
    split.references, split.ids = split.references[:n_images], split.ids[:n_images]
    images = encode_images(split, retriever.image_transform, retriever.encode_images)
    return retriever, images, [refs[0] for refs in split.references]


def cached_embeddings(n_images, dim=512):
    """Unit image and caption embeddings of CLIP ViT-B/32's width, each caption close to its own image."""
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(images + 4.0 * torch.randn(n_images, dim, generator=generator) / dim**0.5,
                                          dim=1)  # fmt: skip
    return images, texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--source", choices=("cached", "world"), default="cached")
    parser.add_argument("--cache_dir", default=None, help="the synthetic world's cache (default: the user cache)")
    args = parser.parse_args()
    from egg.zoo.discriminative_captioner.evaluation.retrieval import encode_captions, precision_at_1

    started = time.perf_counter()
    if args.source == "world":
        retriever, images, captions = world_inputs(args.images, args.cache_dir)
        started = time.perf_counter()
        texts = encode_captions(retriever, captions)
    else:
        images, texts = cached_embeddings(args.images)
        started = time.perf_counter()
    encoded = time.perf_counter()
    p_at_1, hits = precision_at_1(texts, images, candidates=100, seed=0)
    scored = time.perf_counter()
    total = scored - started
    print(f"{len(hits)} images scored ({args.source}, {torch.get_num_threads()} CPU threads): "
          f"P@1 {100 * p_at_1:.1f}%; encoding captions {encoded - started:.2f} s, scoring {scored - encoded:.3f} s, "
          f"total {total:.2f} s (budget {BUDGET:.0f} s: {total / BUDGET:.2f})")  # fmt: skip
    return total


if __name__ == "__main__":
    main()
