"""ClipCap (Mokady et al., 2021): frozen CLIP image features -> mapper -> prefix embeddings -> GPT-2.

``ClipCapModel`` reproduces the parameter layout of the released checkpoints (``clip_project.*`` and ``gpt.*``)
for both mapper kinds, so a released ``.pt`` file loads strictly and a finetuned model saves back in the same
format (``clipcap_checkpoint.py``).
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN, NewGELUActivation

from ..choices import CLIPCAP_MAPPING_TYPES
from ..runtime.checkpointing import atomic_save
from ..runtime.errors import UsageError
from ..runtime.pretrained import FrozenModule
from .base import ConditionalCaptioner, generate_with, pad_batch, pad_to, stop_token_ids

MAPPING_TYPES = CLIPCAP_MAPPING_TYPES


@dataclass
class ClipCapConfig:
    """Architecture of a ClipCap model; saved with every checkpoint and checked when one is loaded.

    The released files: MLP mapper, ViT-B/32 features (512-d), prefix 10, raw features (COCO and Conceptual
    Captions); transformer mapper, RN50x4 features (640-d), prefix 40, clip_length 40, 8 layers, L2-normalised
    features (COCO).
    """

    prefix_length: int = 10
    prefix_size: int = 512  # CLIP embedding size: 512 for ViT-B/32, 640 for RN50x4
    mapping_type: str = "mlp"
    clip_length: int = 10  # transformer mapper: positions the CLIP feature is unfolded into
    num_layers: int = 8  # transformer mapper depth
    normalize_prefix: bool = False


class MLPMapper(nn.Module):
    """ClipCap's MLP mapper: Linear -> Tanh -> Linear (keys ``model.0`` and ``model.2``)."""

    def __init__(self, prefix_size, prefix_length, embedding_size):
        super().__init__()
        hidden = embedding_size * prefix_length // 2
        self.model = nn.Sequential(
            nn.Linear(prefix_size, hidden), nn.Tanh(), nn.Linear(hidden, embedding_size * prefix_length)
        )

    def forward(self, features):
        return self.model(features)  # [B, P * E]


class MapperAttention(nn.Module):
    """Multi-head self-attention as ClipCap's mapper has it: bias-free query and fused key/value projections."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)  # output: all keys, then all values
        self.project = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        heads, head_dim = self.num_heads, c // self.num_heads
        queries = self.to_queries(x).view(b, n, heads, head_dim).transpose(1, 2)  # [B, H, N, D]
        keys_values = self.to_keys_values(x).view(b, n, 2, heads, head_dim)  # [B, N, 2, H, D]
        keys, values = keys_values.unbind(dim=2)  # [B, N, H, D] each
        out = nn.functional.scaled_dot_product_attention(queries, keys.transpose(1, 2), values.transpose(1, 2))
        return self.project(out.transpose(1, 2).reshape(b, n, c))  # [B, N, C]


class MapperMLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x)))


class MapperLayer(nn.Module):
    """Pre-norm transformer layer (attention, then a ReLU MLP of width 2 x dim)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MapperAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MapperMLP(dim, 2 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MapperTransformer(nn.Module):
    def __init__(self, dim, num_heads, num_layers):
        super().__init__()
        self.layers = nn.ModuleList(MapperLayer(dim, num_heads) for _ in range(num_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerMapper(nn.Module):
    """ClipCap's transformer mapper: the CLIP feature unfolded into ``clip_length`` vectors, followed by
    ``prefix_length`` learned constants, through a transformer; the constants' outputs are the prefix."""

    def __init__(self, prefix_size, prefix_length, embedding_size, clip_length, num_layers, num_heads=8):
        super().__init__()
        self.clip_length = clip_length
        self.linear = nn.Linear(prefix_size, clip_length * embedding_size)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, embedding_size))
        self.transformer = MapperTransformer(embedding_size, num_heads, num_layers)

    def forward(self, features):
        unfolded = self.linear(features).view(features.shape[0], self.clip_length, -1)  # [B, L, E]
        constants = self.prefix_const.unsqueeze(0).expand(features.shape[0], -1, -1)  # [B, P, E]
        out = self.transformer(torch.cat([unfolded, constants], dim=1))  # [B, L + P, E]
        return out[:, self.clip_length :].flatten(1)  # [B, P * E]


def fuse_gelu(gpt):
    """Swaps GPT-2's ``gelu_new`` for torch's fused tanh GELU (transformers' ``gelu_pytorch_tanh``).

    Both compute ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``, equal up to float rounding (at most 3e-7
    apart in fp32).  transformers writes ``gelu_new`` as seven elementwise operations, each keeping its own
    ``[tokens, 4E]`` tensor for the backward: at batch 100 in GPT-2 small that is about 3 GB and a tenth of the
    step's time (one thread: 1.16 s against 0.31 s per layer and 5,000 tokens, forward and backward).
    """
    for module in gpt.modules():
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, ACT2FN["gelu_pytorch_tanh"])
    if gpt.config.activation_function == "gelu_new":
        gpt.config.activation_function = "gelu_pytorch_tanh"


class ClipCapModel(nn.Module):
    """The trainable part of ClipCap: the mapper (``clip_project``) and the GPT-2 language model (``gpt``)."""

    def __init__(self, config, gpt):
        super().__init__()
        if config.mapping_type not in MAPPING_TYPES:
            raise UsageError(f"ClipCap mapping type {config.mapping_type!r}: choose one of {MAPPING_TYPES}")
        self.config = config
        fuse_gelu(gpt)
        self.gpt = gpt
        self.embedding_size = gpt.get_input_embeddings().weight.shape[1]
        if config.mapping_type == "mlp":
            self.clip_project = MLPMapper(config.prefix_size, config.prefix_length, self.embedding_size)
        else:
            self.clip_project = TransformerMapper(
                config.prefix_size, config.prefix_length, self.embedding_size, config.clip_length, config.num_layers
            )
        # Buffers that old transformers versions saved with GPT-2; kept only to write them back unchanged.
        self.legacy_buffers = {}

    def prefix(self, features):
        """Prefix embeddings ``[B, P, E]`` of CLIP image features ``[B, prefix_size]``."""
        features = features.float()
        if self.config.normalize_prefix:
            features = features / features.norm(dim=-1, keepdim=True)
        return self.clip_project(features).view(-1, self.config.prefix_length, self.embedding_size)

    def hidden(self, prefix, tokens):
        """GPT-2's last hidden states ``[B, T, E]`` at the positions predicting each of ``tokens`` ``[B, T]``."""
        embeddings = torch.cat([prefix, self.gpt.get_input_embeddings()(tokens)], dim=1)  # [B, P + T, E]
        states = self.gpt.transformer(inputs_embeds=embeddings, use_cache=False).last_hidden_state  # [B, P + T, E]
        return states[:, prefix.shape[1] - 1 : -1]  # [B, T, E]: position P - 1 predicts the first token

    def forward(self, prefix, tokens):
        """Logits ``[B, T, V]`` predicting each of ``tokens`` ``[B, T]`` (only there: not at the prefix)."""
        return self.gpt.lm_head(self.hidden(prefix, tokens))


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


class ClipCapCaptioner(ConditionalCaptioner):
    """ClipCap as a captioner: rollouts with per-caption log-probabilities, beam-search decoding, MLE loss.

    Its input (``sender_input``) is CLIP image features; ``image_encoder`` computes them from pixels once, so
    they can be cached.  Captions end at the first '.' or end-of-text token (ClipCap's own rule), after at most
    ``max_len`` tokens; with ``stop_at_any_period`` at the first token whose string contains '.' ("Ġ.", "...",
    ...), as the authors' DiscriTune code decodes.
    """

    cache_inputs = True  # the image encoder is frozen: its features are computed once per image

    def __init__(self, model, tokenizer, image_encoder, max_len=40, stop_at_any_period=False):
        super().__init__()
        self.switch_off_dropout(model)
        self.model = model
        self.tokenizer = tokenizer
        self.image_encoder = image_encoder
        self.max_len = max_len
        self.eos_id = tokenizer.eos_token_id
        period_id = tokenizer.convert_tokens_to_ids(".")
        if self.eos_id is None or period_id is None or period_id == tokenizer.unk_token_id:
            raise UsageError("the ClipCap tokenizer needs an end-of-text token and a '.' token")
        self.period_id = period_id
        self.stop_ids = stop_token_ids(tokenizer, [self.eos_id, period_id], any_period=stop_at_any_period)

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

    def condition_of(self, features):
        """The prefix embeddings ``[B, P, E]`` GPT-2 reads before the caption."""
        return self.model.prefix(features)

    def mean_divisor(self, tokens, length):
        """The authors' length normalisation: their decoding forces an end-of-text token after a period (any
        stop token but end-of-text) and divides by the caption's length with it, where it fits in ``max_len``."""
        last = tokens.gather(1, (length.long() - 1).clamp(min=0)[:, None])[:, 0]  # [B] each caption's last token
        stops = torch.as_tensor(self.stop_ids, device=tokens.device)
        forced = torch.isin(last, stops) & (last != self.eos_id) & (length < self.max_len)  # [B]
        return length + forced.to(length.dtype)

    def _generate(self, prefix, sample=False, **settings):
        """``generate``'s output after the prefix (new tokens only, ``[B, T <= max_len]``)."""
        generation = self._generation_config(self.eos_id, **settings)
        attention_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        return generate_with(self.model.gpt, generation, sample, inputs_embeds=prefix, attention_mask=attention_mask)

    def _decode_tokens(self, prefix, **decoding):
        return pad_to(self._generate(prefix, **decoding), self.max_len, self.eos_id)

    def _prefix_language_model(self):
        return self.model.gpt, self.eos_id

    @property
    def lm_head(self):
        return self.model.gpt.lm_head

    def _hidden(self, prefix, tokens):
        return self.model.hidden(prefix, tokens)

    def reference_tokens(self, captions):
        """Token ids of reference captions, each ending with the stop token the captioner stops on.

        That is the single '.' token, appended as an id: GPT-2's BPE encodes the text " ." as another token,
        which would never stop a caption.
        """
        texts = [c.strip().rstrip(".").rstrip() for c in captions]
        return [(ids + [self.period_id])[: self.max_len] for ids in self.tokenizer(texts)["input_ids"]]

    def mle_loss(self, features, captions):
        """Mean token cross-entropy of reference ``captions`` (ClipCap's training objective)."""
        tokens, labels = pad_batch(self.reference_tokens(captions), self.eos_id)  # [B, T] each
        device = features.device
        logits = self._logits(self.condition(features), tokens.to(device))  # [B, T, V]
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.to(device).flatten())


def save_clipcap(model, path):
    """Writes ``model`` in the released ClipCap layout (with its legacy buffers, if it was loaded with them)."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_save({**state, **model.legacy_buffers}, path)
