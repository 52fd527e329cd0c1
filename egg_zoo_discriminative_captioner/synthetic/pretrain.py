"""Pretraining the world's stand-ins for CLIP, GPT-2 and ClipCap-ConCap.

- ``train_retriever``: a tiny ``clip.model.CLIP`` (ViT image tower, CLIP's BPE text tower) trained contrastively
  on images paired with complete, partial and alt-text captions, so that, like real CLIP, it understands every
  caption style a captioner may produce.
- ``train_language_model``: a GPT-2-architecture LM over a word-level vocabulary, trained on text alone
  (descriptions and alt-text, as GPT-2 saw both on the web), so it knows colour words before any image.
- ``train_captioner``: ClipCap (tiny-CLIP features -> MLP mapper -> that LM) trained by maximum likelihood on the
  alt-text captions only: the miniature ClipCap-ConCap.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from ..captioners.base import pad_batch
from ..captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel
from ..runtime.clip_loading import CLIP_MEAN, CLIP_STD, clip
from . import world as W

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class PretrainConfig:
    """Sizes and schedules of the stand-in models; part of the cache key."""

    embed_dim: int = 64
    vision_width: int = 64
    vision_layers: int = 2
    patch_size: int = 8
    text_width: int = 64
    text_layers: int = 2
    context_length: int = 20
    retriever_steps: int = 1200
    retriever_batch: int = 256
    retriever_lr: float = 3e-3
    lm_width: int = 64
    lm_layers: int = 2
    lm_heads: int = 2
    lm_steps: int = 600
    lm_batch: int = 128
    lm_lr: float = 3e-3
    prefix_length: int = 4
    captioner_steps: int = 2500
    captioner_batch: int = 64
    captioner_lr: float = 1e-3


def to_pixels(images):
    """uint8 images ``[N, S, S, 3]`` -> CLIP-normalised pixels ``[N, 3, S, S]`` (what CLIP's preprocess gives)."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _cosine_lr(step, total, peak):
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def training_caption(scenes, i, rng):
    """A caption of any style and its Mention, as the retriever sees them in training."""
    draw = rng.random()
    if draw < 0.35:
        return W.describe(scenes, i, rng, complete=True)
    if draw < 0.75:
        return W.describe(scenes, i, rng, complete=False)
    return W.alt_text(scenes, i, rng)


class _Tokens:
    """``clip.tokenize`` with each distinct text tokenized once: captions recur, and CLIP's BPE in Python was a
    fifth of a retriever step.  Rows are the ones ``clip.tokenize`` gives, so the world is unchanged."""

    def __init__(self, context_length):
        self.context_length = context_length
        self.rows = {}

    def __call__(self, texts):
        new = [text for text in dict.fromkeys(texts) if text not in self.rows]
        if new:
            self.rows.update(zip(new, clip.tokenize(new, context_length=self.context_length, truncate=True)))
        return torch.stack([self.rows[text] for text in texts])  # [B, context_length]


def train_retriever(images, scenes, cfg, seed, progress=True):
    """A tiny CLIP trained with CLIP's symmetric contrastive loss; returns it in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = clip.model.CLIP(
        embed_dim=cfg.embed_dim,
        image_resolution=images.shape[1],
        vision_layers=cfg.vision_layers,
        vision_width=cfg.vision_width,
        vision_patch_size=cfg.patch_size,
        context_length=cfg.context_length,
        vocab_size=49408,  # CLIP's BPE vocabulary, so clip.tokenize works unchanged
        transformer_width=cfg.text_width,
        transformer_heads=cfg.text_width // 64,  # what clip.model.build_model infers when it reloads the file
        transformer_layers=cfg.text_layers,
    )
    # The 49408-word embedding stays at its random init: the world uses ~60 words, and Adam over 3M unused
    # rows would dominate the step time.
    model.token_embedding.requires_grad_(False)
    pixels = to_pixels(images)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.retriever_lr, weight_decay=0.05)
    tokenize = _Tokens(cfg.context_length)
    for step in tqdm(range(cfg.retriever_steps), desc="synthetic world: CLIP retriever", disable=not progress):
        _set_lr(optimizer, _cosine_lr(step, cfg.retriever_steps, cfg.retriever_lr))
        batch = rng.choice(len(images), size=cfg.retriever_batch, replace=False)
        texts, mentions = zip(*(training_caption(scenes, i, rng) for i in batch))
        tokens = tokenize(texts)
        logits_per_image, logits_per_text = model(pixels[batch], tokens)  # [B, B] each
        # Every image a caption fits is a positive, so the retriever learns to spread its belief over all of them.
        batch_scenes = scenes.subset(batch)
        fits = torch.from_numpy(np.stack([W.matches(m, batch_scenes) for m in mentions])).float()  # [text, image]
        loss = (
            torch.nn.functional.cross_entropy(logits_per_text, fits / fits.sum(1, keepdim=True))
            + torch.nn.functional.cross_entropy(logits_per_image, (fits / fits.sum(0, keepdim=True)).T)
        ) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    return model.eval()


def word_tokenizer():
    """A word-level tokenizer over the world's vocabulary, with GPT-2's single end-of-text special token."""
    vocabulary = {EOS: 0, ".": 1, **{word: i + 2 for i, word in enumerate(W.vocabulary())}}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, "circle ." -> "circle."
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)


def text_corpus_sentence(scenes, i, rng):
    """A sentence of the LM's text-only corpus: descriptions and alt-text alike, as on the web."""
    if rng.random() < 0.6:
        return W.describe(scenes, i, rng, complete=rng.random() < 0.5)[0]
    return W.alt_text(scenes, i, rng)[0]


def train_language_model(tokenizer, cfg, seed, progress=True):
    """A small GPT-2 trained on text alone (scenes are drawn afresh; no image is involved)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=cfg.lm_width,
        n_layer=cfg.lm_layers,
        n_head=cfg.lm_heads,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lm_lr, weight_decay=0.01)
    for step in tqdm(range(cfg.lm_steps), desc="synthetic world: GPT-2 language model", disable=not progress):
        _set_lr(optimizer, _cosine_lr(step, cfg.lm_steps, cfg.lm_lr))
        scenes = W.sample_scenes(rng, cfg.lm_batch, p_two_objects=0.35)
        texts = [EOS + " " + text_corpus_sentence(scenes, i, rng) + " ." for i in range(cfg.lm_batch)]
        tokens, labels = pad_batch(tokenizer(texts)["input_ids"], tokenizer.eos_token_id)
        logits = model(input_ids=tokens).logits[:, :-1]  # [B, T - 1, V]: position t predicts token t + 1
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def train_captioner(features, references, language_model, tokenizer, image_encoder, cfg, seed, progress=True):
    """ClipCap trained by maximum likelihood on ``references`` (one alt-text per image), mapper and LM alike."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = ClipCapConfig(prefix_length=cfg.prefix_length, prefix_size=features.shape[1])
    captioner = ClipCapCaptioner(ClipCapModel(config, language_model), tokenizer, image_encoder)
    optimizer = torch.optim.AdamW(captioner.trainable_parameters(), lr=cfg.captioner_lr, weight_decay=0.01)
    captioner.train()
    for step in tqdm(range(cfg.captioner_steps), desc="synthetic world: ClipCap captioner", disable=not progress):
        _set_lr(optimizer, _cosine_lr(step, cfg.captioner_steps, cfg.captioner_lr))
        batch = rng.choice(len(features), size=cfg.captioner_batch, replace=False)
        loss = captioner.mle_loss(features[batch], [references[i] for i in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return captioner.eval()
