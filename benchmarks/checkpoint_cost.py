"""Time of one mid-epoch checkpoint of a GPT-2-small-sized ClipCap on the CPU (random weights).

``python benchmarks/checkpoint_cost.py [--repeats 3] [--directory DIR]``

Builds ClipCap at the released Conceptual Captions size (GPT-2 small, vocabulary 50257; MLP mapper 512 -> 3840 ->
7680, prefix length 10) inside the DiscriTune game, gives Adam its state with one update, and times
``CheckpointWriter.save_checkpoint("latest", ...)``, the call ``--checkpoint_every`` and SIGTERM make: the game's
trainable state and the optimizer's, written atomically, plus the resume state (sampler position, RNG states).
Prints one JSON line with the median time, the files' sizes and the time of one training step at batch 4 for scale.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from egg.zoo.discriminative_captioner.archs import CaptionerSender, DiscriminativeGame, RetrieverReceiver  # noqa: E402
from egg.zoo.discriminative_captioner.callbacks import CheckpointWriter, EpochSetter  # noqa: E402
from egg.zoo.discriminative_captioner.captioners.clipcap import (  # noqa: E402
    ClipCapCaptioner,
    ClipCapConfig,
    ClipCapModel,
)
from egg.zoo.discriminative_captioner.data.samplers import EpochBatchSampler  # noqa: E402
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss  # noqa: E402
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever  # noqa: E402
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip, clip_transform  # noqa: E402
from tests.tiny_models import gpt2_tokenizer  # noqa: E402


def build_game():
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config())  # GPT-2 small: 12 layers, width 768, vocabulary 50257
    model = ClipCapModel(ClipCapConfig(prefix_length=10, prefix_size=512), gpt)
    captioner = ClipCapCaptioner(model, gpt2_tokenizer(), image_encoder=None, max_len=10)
    retriever = ClipRetriever(clip.model.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).eval(),
                              clip_transform(224))  # fmt: skip
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever), DiscriminationLoss())
    return game, captioner, retriever


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--directory", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    game, captioner, retriever = build_game()
    optimizer = torch.optim.Adam(captioner.trainable_parameters(), lr=1e-7)
    game.train()
    start = time.perf_counter()
    pixels = torch.randn(4, 3, 224, 224)
    loss, _ = game(torch.randn(4, 512), torch.arange(4), retriever.encode_images(pixels))
    loss.backward()
    optimizer.step()  # Adam's state now exists, as in a run
    step_seconds = time.perf_counter() - start

    position = EpochSetter(EpochBatchSampler(2_800_000, 100, seed=0))
    position.on_epoch_begin(1)
    trainer = SimpleNamespace(game=game, optimizer=optimizer, optimizer_scheduler=None, start_epoch=0,
                              distributed_context=SimpleNamespace(is_distributed=False))  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        writer = CheckpointWriter(directory, position, checkpoint_every=1000)
        writer.trainer = trainer
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            path = writer.save_checkpoint(CheckpointWriter.LATEST, completed=0, batches_done=14_000)
            times.append(time.perf_counter() - start)
        sizes = {name: os.path.getsize(os.path.join(directory, name)) for name in sorted(os.listdir(directory))}
    print(json.dumps({
        "model": "ClipCap, GPT-2 small + MLP mapper 512->3840->7680, prefix 10",
        "trainable_parameters": sum(p.numel() for p in captioner.trainable_parameters()),
        "checkpoint_seconds_median": round(statistics.median(times), 2),
        "checkpoint_seconds_all": [round(t, 2) for t in times],
        "file_megabytes": {name: round(size / 2**20, 1) for name, size in sizes.items()},
        "training_step_seconds_batch_4": round(step_seconds, 2),
        "checkpoint": os.path.basename(path),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
