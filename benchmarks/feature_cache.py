"""Measures the frozen-feature cache on a Flickr30k-layout data set of real JPEG files, with the tests' tiny
models (ClipCap over a tiny CLIP, the same tiny CLIP as retriever):

- the cache's build rate (images per second, decoding + both frozen encoders) and its size on disk per 1,000
  images (fp16 shards, both encoders);
- training steps per second with batches read from the cache vs. with every batch's images decoded and encoded
  by the frozen CLIP encoders (what each step costs without a cache), same models, batch and captions, measured
  in the same run.

    python benchmarks/feature_cache.py [--images 1000] [--batch_size 50] [--steps 10] [--image_size 256]
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the tests' tiny models

from egg.zoo.discriminative_captioner.data import collate_game_batch  # noqa: E402
from egg.zoo.discriminative_captioner.data.base import EncodedSplit, TransformedImages  # noqa: E402
from egg.zoo.discriminative_captioner.experiment import build_experiment, encode_split  # noqa: E402
from egg.zoo.discriminative_captioner.games import build_game, build_optimizer  # noqa: E402
from egg.zoo.discriminative_captioner.options.parse import get_opts  # noqa: E402
from tests.tiny_models import model_files  # noqa: E402


def write_flickr(root, n_images, size):
    """``dataset_flickr30k.json`` + ``Images/``: random photos-like JPEGs (smooth colour fields plus noise)."""
    os.makedirs(os.path.join(root, "Images"))
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n_images):
        base = rng.integers(0, 255, size=(4, 4, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC), dtype=np.int16)
        image = np.clip(image + rng.integers(-20, 20, size=image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(root, "Images", f"{i}.jpg"), quality=90)
        split = "train" if i >= 200 else "val" if i >= 100 else "test"
        entries.append({"filename": f"{i}.jpg", "imgid": i, "split": split, "sentences": [{"raw": f"image {i}"}]})
    with open(os.path.join(root, "dataset_flickr30k.json"), "w") as f:
        json.dump({"images": entries}, f)


class DecodedPixels(EncodedSplit):
    """A split read from its image files at every step: pixels for the captioner's and the retriever's encoders."""

    def __init__(self, split, captioner, retriever):
        super().__init__(split, TransformedImages(split.images, captioner.image_transform),
                         TransformedImages(split.images, retriever.image_transform))  # fmt: skip


def steps_per_second(game, optimizer, loader, steps, encode=None):
    """Optimizer steps per second over ``steps`` batches (after one warm-up step)."""
    batches = iter(loader)
    started = None
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        sender_input, labels, receiver_input, aux_input = next(batches)
        if encode is not None:  # no cache: both frozen CLIP image encoders run on this batch's pixels
            sender_input, receiver_input = encode(sender_input, receiver_input)
        optimizer.zero_grad()
        loss, _ = game(sender_input, labels, receiver_input, aux_input)
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the data set (train = all but 200)")
    parser.add_argument("--image_size", type=int, default=256, help="side of the JPEG files")
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    root = tempfile.mkdtemp(prefix="discritune-cache-bench-")
    os.makedirs(os.path.join(root, "models"))
    files = model_files(os.path.join(root, "models"))
    write_flickr(os.path.join(root, "flickr"), args.images, args.image_size)
    opts = get_opts(["--dataset", "flickr", "--data_root", os.path.join(root, "flickr"), "--feature_cache_dir",
                     os.path.join(root, "features"), "--clipcap_checkpoint", files["clipcap_mlp"], "--language_model",
                     files["language_model"], "--captioner_clip_model", files["clip"], "--clip_model", files["clip"],
                     "--batch_size", str(args.batch_size), "--max_len", "8", "--lr", "1e-4",
                     "--checkpoint_dir", ""])  # fmt: skip
    experiment = build_experiment(opts)

    started = time.perf_counter()
    cached = encode_split(experiment, "train", opts.device)  # builds both caches
    build_seconds = time.perf_counter() - started
    n = len(cached)
    cache_root = os.path.join(root, "features")
    shard_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(cache_root)
                      for f in names if f.startswith("features-"))  # fmt: skip
    started = time.perf_counter()
    encode_split(experiment, "train", opts.device)  # a run that finds the caches
    open_seconds = time.perf_counter() - started

    game = build_game(opts, experiment.captioner, experiment.retriever)
    optimizer = build_optimizer(game)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    batches = [order[i : i + args.batch_size] for i in range(0, n - args.batch_size + 1, args.batch_size)]
    batches = (batches * (args.steps // len(batches) + 2))[: args.steps + 1]
    def loader(dataset):
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate_game_batch)

    def encode(sender_pixels, receiver_pixels):
        return experiment.captioner.encode_images(sender_pixels), experiment.retriever.encode_images(receiver_pixels)

    decoded = DecodedPixels(cached.split, experiment.captioner, experiment.retriever)
    from_images = steps_per_second(game, optimizer, loader(decoded), args.steps, encode)
    from_cache = steps_per_second(game, optimizer, loader(cached), args.steps)

    print(f"images: {n} train images of {args.image_size}x{args.image_size} JPEG, batch {args.batch_size}, "
          f"{args.steps} steps, {torch.get_num_threads()} threads, device {opts.device}")
    print(f"cache build: {n / build_seconds:.0f} images/s ({build_seconds:.1f} s for {n} images, both encoders); "
          f"opening the built caches: {open_seconds:.2f} s")
    print(f"cache size on disk: {shard_bytes / n * 1000 / 1024:.1f} KiB per 1,000 images (fp16, "
          f"{experiment.captioner.model.config.prefix_size}-d captioner + retriever features)")
    print(f"training steps/s: from the feature cache {from_cache:.2f}, from decoded images {from_images:.2f} "
          f"(ratio {from_cache / from_images:.2f}x)")


if __name__ == "__main__":
    main()
