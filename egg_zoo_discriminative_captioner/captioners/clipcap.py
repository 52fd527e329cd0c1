"""ClipCap (Mokady et al., 2021): frozen CLIP image features -> mapper -> prefix embeddings -> GPT-2.

``ClipCapModel`` reproduces the parameter layout of the released checkpoints (``clip_project.*`` and ``gpt.*``),
so a released ``.pt`` file loads strictly and a finetuned model saves back in the same format.
"""

import dataclasses
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, GPT2LMHeadModel

from ..checkpointing import atomic_save
from ..clip_models import load_clip
from ..errors import UsageError, missing_weights
from ..frozen import FrozenModule
from .base import Rollout, caption_mask, pad_batch, pad_to, sequence_log_prob


@dataclass
class ClipCapConfig:
    """Architecture of a ClipCap model; saved with every checkpoint and checked when one is loaded."""

    prefix_length: int = 10
    prefix_size: int = 512  # CLIP embedding size: 512 for ViT-B/32
    mapping_type: str = "mlp"
    normalize_prefix: bool = False  # the released MLP checkpoints take raw CLIP features


class MLPMapper(nn.Module):
    """ClipCap's MLP mapper: Linear -> Tanh -> Linear (keys ``model.0`` and ``model.2``)."""

    def __init__(self, prefix_size, prefix_length, embedding_size):
        super().__init__()
        hidden = embedding_size * prefix_length // 2
        self.model = nn.Sequential(
            nn.Linear(prefix_size, hidden), nn.Tanh(), nn.Linear(hidden, embedding_size * prefix_length)
        )

    def forward(self, features):
        return self.model(features)


class ClipCapModel(nn.Module):
    """The trainable part of ClipCap: the mapper (``clip_project``) and the GPT-2 language model (``gpt``)."""

    def __init__(self, config, gpt):
        super().__init__()
        if config.mapping_type != "mlp":
            raise UsageError(f"ClipCap mapping type {config.mapping_type!r} is not supported; use 'mlp'")
        self.config = config
        self.gpt = gpt
        self.embedding_size = gpt.get_input_embeddings().weight.shape[1]
        self.clip_project = MLPMapper(config.prefix_size, config.prefix_length, self.embedding_size)

    def prefix(self, features):
        """Prefix embeddings ``[B, P, E]`` of CLIP image features ``[B, prefix_size]``."""
        features = features.float()
        if self.config.normalize_prefix:
            features = features / features.norm(dim=-1, keepdim=True)
        return self.clip_project(features).view(-1, self.config.prefix_length, self.embedding_size)

    def forward(self, prefix, tokens):
        """Logits ``[B, T, V]`` predicting each of ``tokens`` ``[B, T]`` from the prefix and the tokens before it."""
        embeddings = torch.cat([prefix, self.gpt.get_input_embeddings()(tokens)], dim=1)  # [B, P + T, E]
        logits = self.gpt(inputs_embeds=embeddings).logits  # [B, P + T, V]
        return logits[:, prefix.shape[1] - 1 : -1]  # [B, T, V]: position P - 1 predicts the first token


class ClipImageEncoder(FrozenModule):
    """ClipCap's frozen CLIP image encoder: preprocessed pixels -> raw ``encode_image`` features (fp32)."""

    def __init__(self, clip_model, image_transform):
        super().__init__()
        self.visual = clip_model.visual
        self.image_transform = image_transform
        self.freeze()

    @torch.no_grad()
    def forward(self, pixels):
        weight = self.visual.conv1.weight
        return self.visual(pixels.to(weight.device, weight.dtype)).float()


class ClipCapCaptioner(nn.Module):
    """ClipCap as a captioner: rollouts with per-caption log-probabilities, beam-search decoding, MLE loss.

    Its input (``sender_input``) is CLIP image features; ``image_encoder`` computes them from pixels once, so
    they can be cached.  Captions end at the first '.' or end-of-text token, after at most ``max_len`` tokens.
    Dropout is switched off: REINFORCE must score a caption with the same network that sampled it, and
    decoding must not depend on the Trainer's train/eval mode.
    """

    def __init__(self, model, tokenizer, image_encoder, max_len=40):
        super().__init__()
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        self.model = model
        self.tokenizer = tokenizer
        self.image_encoder = image_encoder
        self.max_len = max_len
        self.eos_id = tokenizer.eos_token_id
        period_id = tokenizer.convert_tokens_to_ids(".")
        if self.eos_id is None or period_id is None or period_id == tokenizer.unk_token_id:
            raise UsageError("the ClipCap tokenizer needs an end-of-text token and a '.' token")
        self.stop_ids = [self.eos_id, period_id]

    @property
    def config(self):
        return self.model.config

    @property
    def image_transform(self):
        """PIL image -> pixels, as the frozen CLIP image encoder expects them."""
        return self.image_encoder.image_transform

    def save_pretrained(self, directory):
        """Writes the weights to ``directory/clipcap.pt`` in ClipCap's own file format; returns the path."""
        path = os.path.join(directory, "clipcap.pt")
        save_clipcap(self.model, path)
        return path

    def trainable_parameters(self):
        """The mapper's and the language model's parameters: everything DiscriTune updates."""
        return list(self.model.parameters())

    def encode_images(self, pixels):
        """Captioner inputs (CLIP features ``[N, prefix_size]``) of preprocessed pixels."""
        return self.image_encoder(pixels)

    def _generate(self, prefix, **decoding):
        generation = GenerationConfig(
            max_new_tokens=self.max_len, eos_token_id=self.stop_ids, pad_token_id=self.eos_id, **decoding
        )
        attention_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        tokens = self.model.gpt.generate(
            inputs_embeds=prefix, attention_mask=attention_mask, generation_config=generation
        )  # [B, T <= max_len], new tokens only
        return pad_to(tokens, self.max_len, self.eos_id)

    def _finish(self, tokens, log_prob, entropy):
        mask = caption_mask(tokens, self.stop_ids)  # [B, T]
        text = self.decode(tokens, mask)
        return Rollout(tokens, log_prob, entropy, mask.sum(1).float(), text)

    def rollout(self, features, greedy=False):
        """Captions sampled from the policy (or its greedy argmax) with their summed log-probabilities."""
        prefix = self.model.prefix(features)  # [B, P, E]
        with torch.no_grad():
            decoding = dict(do_sample=False) if greedy else dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0)
            tokens = self._generate(prefix.detach(), **decoding)  # [B, T]
        log_prob, entropy = sequence_log_prob(self.model(prefix, tokens), tokens, caption_mask(tokens, self.stop_ids))
        return self._finish(tokens, log_prob, entropy)

    @torch.no_grad()
    def generate(self, features, num_beams=5):
        """Beam-search captions (length-normalised scores, as ClipCap's own decoder)."""
        tokens = self._generate(self.model.prefix(features), do_sample=False, num_beams=num_beams)
        zeros = torch.zeros(tokens.shape[0], device=tokens.device)
        return self._finish(tokens, zeros, zeros)

    def score(self, features, tokens):
        """Summed log-probability and mean entropy of given caption tokens ``[B, T]`` (with gradients)."""
        logits = self.model(self.model.prefix(features), tokens)
        return sequence_log_prob(logits, tokens, caption_mask(tokens, self.stop_ids))

    def decode(self, tokens, mask):
        """Caption strings of ``tokens`` [B, T], keeping the positions in ``mask``."""
        kept = [row[keep].tolist() for row, keep in zip(tokens, mask)]
        return [text.strip() for text in self.tokenizer.batch_decode(kept, skip_special_tokens=True)]

    def mle_loss(self, features, captions):
        """Mean token cross-entropy of reference ``captions`` (ClipCap's training objective); '.' is appended."""
        texts = [c.strip() if c.strip().endswith(".") else c.strip() + " ." for c in captions]
        rows = [ids[: self.max_len] for ids in self.tokenizer(texts)["input_ids"]]
        tokens, labels = pad_batch(rows, self.eos_id)  # [B, T] each
        device = features.device
        logits = self.model(self.model.prefix(features), tokens.to(device))  # [B, T, V]
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.to(device).flatten())


# ---------------------------------------------------------------------------------------------------------------
# Released checkpoint files
# ---------------------------------------------------------------------------------------------------------------


def _is_legacy_buffer(key):
    # Causal-mask buffers that transformers < 4.x saved with GPT-2; a suffix test, since "attn.c_attn.bias" is real.
    return key.startswith("gpt.transformer.h.") and key.endswith((".attn.bias", ".attn.masked_bias"))


def _describe(keys, limit=6):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_clipcap_state_dict(model, state_dict, source="checkpoint"):
    """Loads a ClipCap state dict strictly; only the legacy GPT-2 attention buffers are dropped, by name."""
    state_dict = {key: value for key, value in state_dict.items() if not _is_legacy_buffer(key)}
    expected = model.state_dict()
    missing, unexpected = expected.keys() - state_dict.keys(), state_dict.keys() - expected.keys()
    wrong_shape = [
        f"{key} {tuple(state_dict[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected.keys() & state_dict.keys()
        if state_dict[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {_describe(wrong_shape)}")
    if problems:
        raise UsageError(
            f"{source} does not match the ClipCap architecture ({dataclasses.asdict(model.config)}): "
            + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True)


def save_clipcap(model, path):
    """Writes ``model`` in the released ClipCap format (a plain state dict), atomically."""
    atomic_save({key: value.detach().cpu() for key, value in model.state_dict().items()}, path)


def load_language_model(source):
    """GPT-2 architecture (randomly initialised) and tokenizer from a hub id or a local transformers directory."""
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise missing_weights("the GPT-2 config and tokenizer", source, "--language_model", error) from error
    return GPT2LMHeadModel(config), tokenizer


def load_clipcap_captioner(opts):
    """The ClipCap captioner of ``--clipcap_checkpoint``, ``--language_model`` and ``--captioner_clip_model``."""
    if opts.clipcap_checkpoint is None:
        raise UsageError("--captioner clipcap needs --clipcap_checkpoint PATH (a ClipCap .pt state dict)")
    if not os.path.isfile(opts.clipcap_checkpoint):
        raise UsageError(f"ClipCap checkpoint not found: {opts.clipcap_checkpoint} (--clipcap_checkpoint)")
    clip_model, transform = load_clip(opts.captioner_clip_model, "--captioner_clip_model", opts.clip_download_root)
    gpt, tokenizer = load_language_model(opts.language_model)
    config = ClipCapConfig(
        prefix_length=opts.prefix_length,
        prefix_size=clip_model.visual.output_dim,
        normalize_prefix=opts.normalize_prefix,
    )
    model = ClipCapModel(config, gpt)
    try:
        state_dict = torch.load(opts.clipcap_checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a state dict
        raise UsageError(f"cannot read ClipCap checkpoint {opts.clipcap_checkpoint}: {error}") from error
    load_clipcap_state_dict(model, state_dict, source=opts.clipcap_checkpoint)
    return ClipCapCaptioner(model, tokenizer, ClipImageEncoder(clip_model, transform), max_len=opts.max_len)
