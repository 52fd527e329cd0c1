"""A transformers captioner of the synthetic world, for ``--captioner hf``: a ViT + GPT-2 VisionEncoderDecoderModel.

``pretrain_vision_encoder_decoder`` puts the world's CLIP image tower (the retriever's, as ClipCap's encoder is;
frozen) under a GPT-2 decoder that starts from the world's own language model (``language_model/``: its weights
and its word-level tokenizer, with cross-attention added), and trains the decoder by maximum likelihood on the
training images and their alt-text references, as the world's ClipCap-ConCap is trained.  The objective is
``HFCaptioner.mle_loss``: the token cross-entropy of the captioner that ``--captioner hf`` loads, each caption
followed by the end-of-text token it stops at.  The directory holds model, image processor and tokenizer
saved with ``save_pretrained`` (``AutoModelForImageTextToText``, ``AutoImageProcessor`` (CLIP's) and
``AutoTokenizer`` load them), written aside and renamed into place.

``--captioner hf`` without ``--hf_model`` on the synthetic world builds it once into the world's cache directory
(``hf_captioner/``; ``ensure_hf_captioner``); or run it by hand::

    python -m egg.zoo.discriminative_captioner.synthetic.pretrain_hf --output_dir DIR [--preset tiny] [--steps N]
"""

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..runtime.atomic import atomic_directory
from .pretrain import _cosine_lr, _set_lr

HF_DIRECTORY = "hf_captioner"  # inside the world's cache directory
SETTINGS_FILE = "synthetic_pretraining.json"  # what the directory was built with (checked before reuse)
FORMAT_VERSION = 2  # 2: the encoder is the world's CLIP image tower


@dataclass(frozen=True)
class VEDConfig:
    """The MLE schedule of the decoder (the encoder is the world's CLIP image tower, frozen)."""

    steps: int = 2500
    batch: int = 64
    lr: float = 1e-3
    max_len: int = 40
    seed: int = 4  # offset from the world's seed (its retriever, LM and ClipCap use 1, 2, 3)


def config_for(world, **overrides):
    """The VEDConfig that mirrors the world's ClipCap pretraining (its steps, batch and learning rate)."""
    pretrain = world.manifest["pretrain"]
    values = dict(steps=pretrain["captioner_steps"], batch=pretrain["captioner_batch"], lr=pretrain["captioner_lr"])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return VEDConfig(**values)


def build_vision_encoder_decoder(language_model_dir, retriever_dir):
    """``(model, image_processor, tokenizer)``: the world's CLIP image tower (``retriever_dir``, a transformers
    CLIP directory) as the encoder, and the world's GPT-2 with cross-attention added as the decoder."""
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionModel,
        GPT2Config,
        GPT2LMHeadModel,
        VisionEncoderDecoderModel,
    )
    from transformers.utils import logging

    tokenizer = AutoTokenizer.from_pretrained(language_model_dir)
    eos = tokenizer.eos_token_id
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the cross-attention weights are new: that is the point, not a warning
    try:
        encoder = CLIPVisionModel.from_pretrained(retriever_dir)  # the text tower's weights are not used here
        config = GPT2Config.from_pretrained(language_model_dir)
        config.add_cross_attention = config.is_decoder = True
        decoder = GPT2LMHeadModel.from_pretrained(language_model_dir, config=config)
    finally:
        logging.set_verbosity(verbosity)
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    for config in (model.config, model.config.decoder, model.generation_config):
        config.eos_token_id = config.pad_token_id = config.bos_token_id = eos
        config.decoder_start_token_id = eos  # the LM read each sentence after an end-of-text token
    model.config.decoder.is_decoder = model.config.decoder.add_cross_attention = True
    return model, CLIPImageProcessor.from_pretrained(retriever_dir), tokenizer


def image_pixels(image_processor, images, chunk=1000):
    """uint8 images ``[N, S, S, 3]`` -> the processor's pixels ``[N, 3, S, S]`` (what ``image_transform`` gives)."""
    pixels = [image_processor(images=list(images[start : start + chunk]), return_tensors="pt")["pixel_values"]
              for start in range(0, len(images), chunk)]  # fmt: skip
    return torch.cat(pixels)


def pretrain_vision_encoder_decoder(world, directory, cfg=None, progress=True):
    """Trains the world's ViT + GPT-2 captioner (``world``: a ``SyntheticDataset``) and saves it into
    ``directory`` (model, image processor, tokenizer; atomically); returns the directory.

    ``cfg`` (a VEDConfig) defaults to ``config_for(world)``.  Seeded by the world's seed plus ``cfg.seed``; the
    caller's torch RNG is left as it was.
    """
    from ..captioners.hf import HFCaptioner
    from ..captioners.hf_loading import ImageAndText

    cfg = cfg or config_for(world)
    started = time.time()
    world_seed = world.manifest["world"]["seed"]
    images = world.arrays["train_images"]
    references = [str(text) for text in world.arrays["train_alt_text"]]
    with torch.random.fork_rng():
        torch.manual_seed(world_seed + cfg.seed)
        rng = np.random.default_rng(world_seed + cfg.seed)
        model, image_processor, tokenizer = build_vision_encoder_decoder(
            os.path.join(world.directory, "language_model"), os.path.join(world.directory, "retriever_transformers"))
        processor = ImageAndText(image_processor, tokenizer)
        captioner = HFCaptioner(model, processor, max_len=cfg.max_len)  # the CLIP tower stays frozen
        pixels = image_pixels(image_processor, images)
        optimizer = torch.optim.AdamW(captioner.trainable_parameters(), lr=cfg.lr, weight_decay=0.01)
        captioner.train()
        losses = []
        bar = tqdm(range(cfg.steps), desc="synthetic world: ViT-GPT-2 captioner (hf)", disable=not progress)
        for step in bar:
            _set_lr(optimizer, _cosine_lr(step, cfg.steps, cfg.lr))
            batch = rng.choice(len(images), size=min(cfg.batch, len(images)), replace=False)
            loss = captioner.mle_loss(pixels[batch], [references[i] for i in batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        model.eval()
    settings = settings_of(world, cfg)
    settings.update(final_loss=float(np.mean(losses[-50:])) if losses else None,
                    build_seconds=round(time.time() - started, 1))  # fmt: skip
    with atomic_directory(directory) as staging:
        model.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        with open(os.path.join(staging, SETTINGS_FILE), "w") as f:
            json.dump(settings, f, indent=2)
    return directory


def settings_of(world, cfg):
    """What decides the directory's contents: the world (its manifest's checksums) and the VEDConfig."""
    files = world.manifest.get("files", {})
    return {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(cfg),
            "world": {name: files.get(name) for name in ("world.npz", "language_model/model.safetensors")}}  # fmt: skip


def is_current(world, directory, cfg):
    """Whether ``directory`` holds this world's captioner built with ``cfg``."""
    try:
        with open(os.path.join(directory, SETTINGS_FILE)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    expected = settings_of(world, cfg)
    return all(saved.get(key) == value for key, value in expected.items()) and os.path.isfile(
        os.path.join(directory, "config.json"))  # fmt: skip


def ensure_hf_captioner(world, progress=True):
    """The world's ``hf_captioner/`` directory, pretrained first if it is missing or stale."""
    directory = os.path.join(world.directory, HF_DIRECTORY)
    cfg = config_for(world)
    if not is_current(world, directory, cfg):
        print(f"pretraining the synthetic world's transformers captioner in {directory}", flush=True)
        pretrain_vision_encoder_decoder(world, directory, cfg, progress=progress)
    return directory


def main(params=None):
    parser = argparse.ArgumentParser(
        prog="python -m egg.zoo.discriminative_captioner.synthetic.pretrain_hf",
        description="Pretrains a ViT + GPT-2 VisionEncoderDecoderModel on the synthetic world's training images "
        "and alt-text (for --captioner hf --hf_model DIR).",
        allow_abbrev=False,
    )
    parser.add_argument("--output_dir", default=None,
                        help="where to save it (default: the world's cache directory's hf_captioner/, which "
                        "--captioner hf uses when --hf_model is unset)")  # fmt: skip
    parser.add_argument("--preset", default="default", help="the synthetic world's preset: default or tiny")
    parser.add_argument("--cache_dir", default=None, help="the synthetic world's cache (default: the user cache)")
    parser.add_argument("--steps", type=int, default=None, help="MLE steps (default: the world's ClipCap's)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: the world's ClipCap's)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the world's ClipCap's)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(params)
    from . import load_world

    world = load_world(args.cache_dir, args.preset, progress=not args.no_progress)
    cfg = config_for(world, steps=args.steps, batch=args.batch, lr=args.lr)
    directory = args.output_dir or os.path.join(world.directory, HF_DIRECTORY)
    pretrain_vision_encoder_decoder(world, directory, cfg, progress=not args.no_progress)
    print(f"saved the world's transformers captioner in {directory} (--captioner hf --hf_model {directory})")
    return directory


if __name__ == "__main__":
    main()
