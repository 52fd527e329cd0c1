"""Any transformers image-to-text model as a captioner (``--captioner hf --hf_model ID_OR_DIR``).

What ``AutoModelForImageTextToText`` loads (BLIP-2, GIT, Florence-2, PaliGemma, Idefics3 / SmolVLM, Qwen2-VL,
``VisionEncoderDecoderModel`` such as a ViT-GPT-2, ...) with its ``AutoProcessor``.  The model reads the image and
a prompt (``--hf_prompt``, or with a chat template the user turn ``--hf_instruction``); the caption is the
generated continuation only, and the image tokens and prompt are conditioning, never scored (the prompt and the
model's other inputs: ``hf_inputs.py``).

Rollouts are on-policy as for ClipCap and BLIP (``base.ConditionalCaptioner``): the model's
``generation_config`` is set aside, tokens are drawn from the raw softmax and scored again in one
teacher-forced pass with gradients.  Where the model's logits are its output ``nn.Linear`` applied to its last
hidden states (checked once on a probe image), scoring uses the fused head (``fused.py``); otherwise (a
``final_logits_bias``, a soft cap) the full logits.  Captions stop at the model's EOS ids.

What trains: the language part (every parameter outside the vision tower, its projector or Q-former), all of it
with ``--hf_train_vision``, or with ``--lora_rank r`` PEFT LoRA adapters on the language part's linear layers
only.  The KL reference (``archs.FrozenReference``) shares every frozen parameter: with LoRA it copies the
adapters alone, which start at zero, so it is the base model.  Checkpoints hold what trains.
"""

import contextlib
import copy
import inspect
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from PIL import Image
from torch import nn

from ..runtime.checkpointing import atomic_directory
from ..runtime.errors import UsageError
from .base import (
    ConditionalCaptioner,
    caption_mask,
    generate_with,
    pad_batch,
    pad_to,
    sequence_log_prob,
    stop_token_ids,
)
from .fused import BANNED, bypassed_head, head_token_log_probs
from .hf_images import EncodedImages, as_images
from .hf_inputs import PROBE_SIZES, image_inputs, model_inputs, probe, prompt_text, resize_size, resized, text_inputs
from .hf_parts import (
    VISION_PARTS,
    eos_ids,
    frozen_vision_modules,
    is_vision_parameter,
    language_linear_layers,
    placeholder_ids,
    text_config,
)


class _DropMessages(logging.Filter):
    def __init__(self, starts):
        super().__init__()
        self.starts = starts

    def filter(self, record):
        return not record.getMessage().startswith(self.starts)


# transformers warns of padding without an attention mask whenever the pad id equals the start or end id (GPT-2's
# one token for all three).  It never applies here: generation starts from one start token or from the same
# prompt for every image (nothing padded), and in an encoder-decoder's teacher-forced pass (a decoder-only model
# gets its mask) padding only follows a caption's stop token, which causal attention keeps from every position
# that is scored.
PADDING_WARNINGS = _DropMessages(("We strongly recommend passing in an `attention_mask`", "The attention mask"))
WARNING_LOGGERS = ("transformers.modeling_utils", "transformers.generation.utils")


@contextlib.contextmanager
def peft_warnings_off():
    """PEFT wrapping a transformers model: transformers' deprecation of the property PEFT reads
    (``is_gradient_checkpointing``), and PEFT's note that it set ``fan_in_fan_out`` for GPT-2's ``Conv1D``
    layers, which this code sets itself; neither is the user's to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to", category=UserWarning)
        yield


@contextlib.contextmanager
def no_padding_warnings():
    loggers = [logging.getLogger(name) for name in WARNING_LOGGERS]
    for logger in loggers:
        logger.addFilter(PADDING_WARNINGS)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(PADDING_WARNINGS)


@dataclass
class HFCaptionerConfig:
    """What a checkpoint of the generic captioner must match when it is resumed."""

    architecture: str
    vocab_size: int
    hidden_size: int
    prompt: str
    train_vision: bool
    lora_rank: int
    image_size: Optional[int]


class HFCaptioner(ConditionalCaptioner):
    """A transformers image-to-text model as a captioner: rollouts, beam search, MLE loss, LoRA.

    Its input (``sender_input``) is one image's preprocessed pixels, as the model's image processor makes them
    (``[3, H, W]``; a patch model's ``[patches, D]``); the processor's other image outputs (a patch grid, a pixel
    mask) and the prompt's token ids are the same for every image and are kept from a probe.  A processor whose
    output shapes depend on the image's size (Qwen2-VL, Idefics3) gets every image resized to ``image_size``
    squared first.  Inputs are pixels, not cached features; with the vision parts frozen, each image's pass
    through them runs once per training step (``hf_images.py``; ``encode_once = False`` runs them in every pass).
    """

    cache_inputs = False
    encode_once = True

    def __init__(self, model, processor, prompt="", instruction=None, max_len=40, train_vision=False,
                 stop_at_any_period=False, image_size=None, lora=None, merge_lora=False):  # fmt: skip
        super().__init__()
        self.switch_off_dropout(model)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_processor = getattr(processor, "image_processor", None)
        if self.image_processor is None:
            raise UsageError(f"{type(model).__name__}: its processor has no image processor")
        self.encoder_decoder = bool(model.config.is_encoder_decoder)
        self.encoder_decoder_vision = type(model).__name__ == "VisionEncoderDecoderModel"
        if self.encoder_decoder_vision and (prompt or instruction):
            raise UsageError("a VisionEncoderDecoderModel reads no text: leave --hf_prompt and --hf_instruction unset")
        self.max_len = max_len
        self.merge_lora = merge_lora
        self.prompt = prompt_text(processor, prompt, instruction)
        self.stop_ids = stop_token_ids(self.tokenizer, eos_ids(model, self.tokenizer), any_period=stop_at_any_period)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.start_id = self._decoder_start(model) if self.encoder_decoder else None
        banned = placeholder_ids(model, processor)
        ban = None
        if banned:
            ban = torch.zeros(model.get_output_embeddings().weight.shape[0])
            ban[banned] = BANNED
        self.register_buffer("ban", ban, persistent=False)  # [V]: no caption holds an image placeholder
        self._freeze_all_but_the_trained_part(model, train_vision, lora)
        self.model = model
        # the PeftModel wraps ``model`` (its adapters are inside it): kept outside the module tree, to save them
        object.__setattr__(self, "peft", None if lora is None else self._add_lora(model, **lora))
        self.image_size = resize_size(self.image_processor, image_size)
        self._probe()
        self._fused = None  # whether scoring may use the fused head: checked on the first scoring pass
        self.vision_modules = () if train_vision else frozen_vision_modules(model, self.encoder_decoder_vision)
        text = text_config(model.config)
        self._config = HFCaptionerConfig(
            architecture=type(model).__name__, vocab_size=text.vocab_size, hidden_size=getattr(text, "hidden_size", 0),
            prompt=self.prompt, train_vision=train_vision, lora_rank=(lora or {}).get("rank", 0),
            image_size=self.image_size,
        )  # fmt: skip
        self._register_state_dict_hook(_drop_frozen_parameters)
        self._register_load_state_dict_pre_hook(_keep_frozen_parameters, with_module=True)

    # ---- building

    def _decoder_start(self, model):
        for config in (model.generation_config, model.config, text_config(model.config)):
            start = getattr(config, "decoder_start_token_id", None)
            if start is not None:
                return int(start)
        raise UsageError(f"{type(model).__name__} is an encoder-decoder without a decoder_start_token_id")

    @staticmethod
    def _freeze_all_but_the_trained_part(model, train_vision, lora):
        encoder_decoder_vision = type(model).__name__ == "VisionEncoderDecoderModel"
        vision = [name for name, _ in model.named_parameters() if is_vision_parameter(name, encoder_decoder_vision)]
        if not vision:
            raise UsageError(f"{type(model).__name__}: cannot tell its vision tower from its language model (no "
                             f"parameter under any of {', '.join(sorted(VISION_PARTS))})")  # fmt: skip
        for name, parameter in model.named_parameters():
            trains = lora is None and (train_vision or not is_vision_parameter(name, encoder_decoder_vision))
            parameter.requires_grad_(trains)

    def _add_lora(self, model, rank, alpha=None, targets=None):
        from peft import LoraConfig, get_peft_model

        layers = language_linear_layers(model, self.encoder_decoder_vision)
        chosen = list(targets) if targets else layers
        conv1d = all(type(model.get_submodule(name)).__name__ == "Conv1D" for name in layers)  # GPT-2's layers
        config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=chosen, lora_dropout=0.0,
                            fan_in_fan_out=conv1d)  # fmt: skip
        try:
            # get_peft_model puts the adapters into ``model`` itself; the PeftModel is kept to save them
            with peft_warnings_off():
                return get_peft_model(model, config)
        except ValueError as error:  # PEFT's: no module matches (NoMatchingPeftModuleError and its kin)
            names = sorted({name.rsplit(".", 1)[-1] for name in layers})
            raise UsageError(f"--lora_targets {' '.join(targets or [])}: {' '.join(str(error).split())[:120]}; "
                             f"{type(model).__name__}'s language linear layers are named "
                             f"{', '.join(names)}") from None  # fmt: skip

    def _probe(self):
        """The prompt's token ids and the image inputs every image shares, from one probe image (``hf_inputs``)."""
        image = resized(Image.new("RGB", PROBE_SIZES[0]), self.image_size)
        reads_text = bool(self.prompt) or not self.encoder_decoder_vision
        accepted = inspect.signature(self.model.forward).parameters
        found = probe(self.processor, image, self.prompt, reads_text, not self.encoder_decoder, accepted)
        self.register_buffer("prompt_ids", found.prompt_ids, persistent=False)  # [P] (None: no text input)
        self.prompt_aligned, self.shared_inputs, self.patches = found.prompt_aligned, found.shared_inputs, found.patches
        self.probe_pixels = self.image_transform(image)

    @property
    def fused(self):
        """Whether the model's logits are its output ``nn.Linear`` of its hidden states (then scoring is fused)."""
        if self._fused is None:
            self._fused = self._head_is_linear()
        return self._fused

    @torch.no_grad()
    def _head_is_linear(self):
        head = self.lm_head
        if not isinstance(head, nn.Linear):
            return False
        pixels = EncodedImages(self.probe_pixels.unsqueeze(0).to(head.weight.device))
        tokens = torch.full((1, 2), self.pad_id, device=head.weight.device)
        logits = self._forward(pixels, tokens)
        with bypassed_head(self, head):
            hidden = self._forward(pixels, tokens)
        return hidden.shape[-1] == head.in_features and torch.allclose(head(hidden), logits, atol=1e-5, rtol=1e-4)

    # ---- the captioner protocol

    @property
    def config(self):
        return self._config

    @property
    def lm_head(self):
        return self.model.get_output_embeddings()

    def image_transform(self, image):
        """PIL image -> one image's pixels, through the model's own image processor."""
        inputs = image_inputs(self.image_processor, resized(image, self.image_size))
        pixels = inputs["pixel_values"]
        return pixels if self.patches else pixels[0]

    def encode_images(self, pixels):
        """The captioner's input is the pixels themselves."""
        return pixels

    def encode_in_parts(self, pixels, images_per_call=None):
        """The images ``[B, ...]`` whose frozen vision parts run once per step, on at most ``images_per_call``
        images per call (``EncodedImages``)."""
        return EncodedImages(pixels, self.vision_modules if self.encode_once else (), images_per_call=images_per_call)

    encode = encode_in_parts

    def condition_of(self, images):
        return images

    def frozen_modules(self):
        """The frozen vision parts: a KL reference shares them, and what they computed in a step."""
        return list(self.vision_modules)

    def trainable_parameters(self):
        """The language part's parameters (all of them with ``--hf_train_vision``; the adapters with LoRA)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _model_inputs(self, images):
        return model_inputs(images.rows(), self.shared_inputs, self.patches)

    def _text_inputs(self, batch, tokens=None):
        return text_inputs(self.prompt_ids, self.prompt_aligned, batch, tokens)

    def _forward(self, images, tokens):
        """The model's output (logits, or hidden states with the head bypassed) at the positions predicting
        ``tokens`` [B, T] of ``images`` (``EncodedImages``, one row each): ``[B, T, V or E]``."""
        batch, width = tokens.shape
        images = as_images(images)
        inputs = self._model_inputs(images)
        if self.encoder_decoder:
            start = tokens.new_full((batch, 1), self.start_id)
            if self.prompt_ids is not None:  # the encoder reads the prompt (Florence-2)
                inputs.update(self._text_inputs(batch))
            inputs["decoder_input_ids"] = torch.cat([start, tokens[:, :-1]], dim=1)
            with images.served(), no_padding_warnings():
                return self.model(**inputs, use_cache=False).logits  # [B, T, V]
        inputs.update(self._text_inputs(batch, tokens))
        with images.served():
            output = self.model(**inputs, use_cache=False).logits  # [B, L, V]: GIT's L counts image tokens too
        return output[:, -width - 1 : -1]  # the caption comes last: the positions before each of its tokens

    def _hidden(self, images, tokens):
        with bypassed_head(self, self.lm_head):
            return self._forward(images, tokens)

    def _score(self, condition, tokens, kl_reference=None, encoded=None):
        if self.fused:
            return super()._score(condition, tokens, kl_reference, encoded)
        if kl_reference is not None:
            raise UsageError(f"{self.config.architecture}: its logits are not a linear head of its hidden states, "
                             "and the KL penalty needs one; set --kl_coeff 0")  # fmt: skip
        mask = caption_mask(tokens, self.stop_ids)
        width = int(mask.sum(1).max())
        tokens, mask = tokens[:, :width], mask[:, :width]
        log_prob, entropy = sequence_log_prob(self._logits(condition, tokens), tokens, mask)
        return log_prob, entropy, None

    def _logits(self, images, tokens):
        """The full logits ``[B, T, V]`` (fp32) predicting ``tokens``, image placeholders banned."""
        logits = self._forward(images, tokens).float()
        return logits if self.ban is None else logits + self.ban

    def _decode(self, condition, **decoding):
        if self.fused:
            return super()._decode(condition, **decoding)
        return self._decode_tokens(condition, **decoding)

    def _generate(self, images, sample=False, **settings):
        """``generate``'s output for ``images`` (``EncodedImages``): for a decoder-only model the prompt then the
        caption, else the decoder's start token then the caption."""
        images = as_images(images)
        batch = len(images)
        extra = {"decoder_start_token_id": self.start_id} if self.encoder_decoder else {}
        generation = self._generation_config(self.pad_id, **extra, **settings)
        inputs = self._model_inputs(images)
        if self.prompt_ids is not None:
            inputs.update(self._text_inputs(batch))
        # beam search repeats a decoder-only model's image inputs per beam: its vision parts run as they come
        served = images.served() if settings.get("num_beams", 1) == 1 else contextlib.nullcontext()
        with served, no_padding_warnings():
            return generate_with(self.model, generation, sample, ban=self.ban, **inputs)

    def _decode_tokens(self, images, **decoding):
        sequences = self._generate(images, **decoding)
        sequences = getattr(sequences, "sequences", sequences)
        if self.encoder_decoder:
            new = sequences[:, 1:]
        else:
            prompt = self.prompt_ids
            starts_with_prompt = sequences.shape[1] >= len(prompt) and bool(
                (sequences[:, : len(prompt)] == prompt).all())  # fmt: skip
            new = sequences[:, len(prompt) :] if starts_with_prompt else sequences
        return pad_to(new, self.max_len, self.pad_id)

    def mle_loss(self, pixels, captions):
        """Mean token cross-entropy of reference ``captions``, each followed by the first EOS id."""
        rows = [self.tokenizer(caption, add_special_tokens=False).input_ids[: self.max_len - 1] + self.stop_ids[:1]
                for caption in captions]  # fmt: skip
        tokens, labels = pad_batch(rows, self.pad_id)
        device = pixels.device
        tokens, labels = tokens.to(device), labels.to(device)
        images = self.condition(pixels)
        if self.fused:
            log_prob = head_token_log_probs(self._hidden(images, tokens), self.lm_head, tokens, self.ban)[0]
        else:
            log_prob = torch.log_softmax(self._logits(images, tokens), -1).gather(-1, tokens[..., None])[..., 0]
        mask = (labels != -100).float()
        return -(log_prob * mask).sum() / mask.sum()

    def save_pretrained(self, directory):
        """Writes ``directory/hf`` in transformers' format (with LoRA, PEFT's adapter directory; with
        ``merge_lora``, the merged model instead), with the processor; returns its path."""
        path = os.path.join(directory, "hf")
        with atomic_directory(path) as staging:
            if self.peft is not None and self.merge_lora:
                copy.deepcopy(self.peft).merge_and_unload().save_pretrained(staging)
            elif self.peft is not None:
                self.peft.save_pretrained(staging)
            else:
                self.model.save_pretrained(staging)
            self.processor.save_pretrained(staging)
        return path

    @contextlib.contextmanager
    def adapters_off(self):
        """Within the block, the model without its LoRA adapters (the base model)."""
        if self.peft is None:
            yield
            return
        with self.peft.disable_adapter():
            yield


def _drop_frozen_parameters(module, state_dict, prefix, local_metadata):
    # Checkpoints hold what trains: the frozen base is rebuilt from --hf_model.
    for name, parameter in module.named_parameters(remove_duplicate=False):
        if not parameter.requires_grad:
            state_dict.pop(f"{prefix}{name}", None)


def _keep_frozen_parameters(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    for name, parameter in module.named_parameters(remove_duplicate=False):
        if not parameter.requires_grad:
            state_dict.setdefault(f"{prefix}{name}", parameter.detach())
