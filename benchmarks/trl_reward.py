"""Times one call of the reward TRL calls (``rewards.DiscriminativeReward``) against the game's reward on the same
batch: 100 captions, 4 per image (TRL's layout: each image's completions in a row, each with its own decoded copy
of the image), on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/trl_reward.py [--retriever world|vit-b-32] [--repeats 5]

The game's reward is its ``_cost``: the receiver scores the captions against the batch's cached image embeddings
and the loss turns the scores into rewards.  The reward for TRL does that too (with the same receiver and loss),
after its own share: telling the call's images apart by their pixels, preprocessing and encoding them (the game
reads them from its feature cache).  ``world``: the built-in world's CLIP (tiny); ``vit-b-32``: CLIP ViT-B/32's
architecture at its real size with random weights (the same arithmetic as the released model, nothing to download).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vit_b_32():
    """CLIP ViT-B/32's architecture (openai/CLIP's configuration), random weights."""
    import clip

    from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
    from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform

    torch.manual_seed(0)
    model = clip.model.CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                            vision_patch_size=32, context_length=77, vocab_size=49408, transformer_width=512,
                            transformer_heads=8, transformer_layers=12).float().eval()  # fmt: skip
    return ClipRetriever(model, clip_transform(224))


def timed(function, repeats):
    """``(median seconds, last result)`` of ``repeats`` calls after one warm-up call."""
    result, times = function(), []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retriever", choices=("world", "vit-b-32"), default="world")
    parser.add_argument("--captions", type=int, default=100)
    parser.add_argument("--per_image", type=int, default=4, help="completions per image (TRL's num_generations)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache_dir", default=None, help="the synthetic world's cache (default: the user cache)")
    args = parser.parse_args()

    from egg.zoo.discriminative_captioner.games import build_game
    from egg.zoo.discriminative_captioner.options.parse import config_of
    from egg.zoo.discriminative_captioner.retrievers import build_retriever
    from egg.zoo.discriminative_captioner.rewards import DiscriminativeReward
    from egg.zoo.discriminative_captioner.synthetic import load_world

    world = load_world(args.cache_dir, "tiny", progress=False)
    config = config_of(["--clip_model", os.path.join(world.directory, "retriever.pt"),
                        "--rollouts_per_image", str(args.per_image), "--kl_coeff", "0"])  # fmt: skip
    retriever = build_retriever(config) if args.retriever == "world" else vit_b_32()
    n_images = args.captions // args.per_image
    arrays = world.arrays["test_images"][:n_images]
    captions = [str(text) for text in world.arrays["test_alt_text"][: args.captions]]
    labels = torch.arange(n_images).repeat_interleave(args.per_image)  # [N]

    reward = DiscriminativeReward(retriever)
    game = build_game(config, None, retriever)  # the captioner plays no part in the reward
    with torch.no_grad():
        cached = retriever.encode_images(torch.stack([retriever.image_transform(Image.fromarray(a)) for a in arrays]))

    def trl_call():  # TRL hands every completion its own decoded copy of its prompt's image
        images = [Image.fromarray(arrays[i]) for i in labels.tolist()]
        return torch.tensor(reward(completions=captions, image=images))

    def game_reward():
        with torch.no_grad():
            cost = game._cost(None, None, captions, labels, cached, None)[0]
        return -cost

    trl_seconds, trl_rewards = timed(trl_call, args.repeats)
    game_seconds, game_rewards = timed(game_reward, args.repeats)
    images_seconds, _ = timed(lambda: reward.image_embeddings(arrays_as_images(arrays), torch.device("cpu")),
                              args.repeats)  # fmt: skip
    print(f"retriever {args.retriever}, {args.captions} captions, {n_images} images, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}")
    print(f"  reward for TRL  {1000 * trl_seconds:8.1f} ms per call")
    print(f"  game's reward   {1000 * game_seconds:8.1f} ms (cached image embeddings)")
    print(f"  of which the reward's images (preprocess + encode {n_images}): {1000 * images_seconds:.1f} ms")
    print(f"  largest difference between the two rewards: {(trl_rewards - game_rewards).abs().max().item():.2e}")


def arrays_as_images(arrays):
    return [Image.fromarray(np.asarray(a)) for a in arrays]


if __name__ == "__main__":
    main()
