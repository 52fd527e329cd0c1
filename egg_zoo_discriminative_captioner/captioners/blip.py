"""BLIP (Li et al., 2022) as a captioner, through transformers' ``BlipForConditionalGeneration``.

The paper uses BLIP base finetuned on COCO captioning from LAVIS.  LAVIS pins transformers < 4.27 and cannot
share an environment with transformers 5, so BLIP goes through transformers instead, where the same model is
``Salesforce/blip-image-captioning-base``.  Captions continue LAVIS's prompt "a picture of" and end at [SEP]
(with ``--stop_at_any_period``, also at any token containing '.').
By default the vision encoder is frozen and only the text decoder trains (``--blip_train_vision`` trains both).
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BlipForConditionalGeneration, BlipProcessor

from ..choices import BLIP_PROMPT
from ..runtime.checkpointing import atomic_directory
from ..runtime.errors import missing_weights
from ..runtime.pretrained import FrozenModule, from_pretrained_strict
from .base import ConditionalCaptioner, generate_with, pad_batch, pad_to, stop_token_ids

DEFAULT_PROMPT = BLIP_PROMPT


@dataclass
class BlipCaptionerConfig:
    """What a checkpoint of the BLIP captioner must match when it is resumed."""

    vision_hidden_size: int
    vision_layers: int
    text_hidden_size: int
    text_layers: int
    vocab_size: int
    prompt: str
    train_vision: bool


class FrozenVision(FrozenModule):
    """BLIP's vision encoder, frozen.

    It keeps its last batch's output: the KL reference (which shares this module) and the greedy baseline read
    the same pixels as the rollout and reuse the features instead of rerunning the encoder.  ``images_per_call``
    bounds the images one pass of the encoder reads (the batch's features are kept whole all the same).
    """

    def __init__(self, vision_model):
        super().__init__()
        self.vision_model = vision_model
        self.last = None  # (pixels, their version, features)
        self.freeze()

    @torch.no_grad()
    def forward(self, pixels, images_per_call=None):
        if self.last is not None and self.last[0] is pixels and self.last[1] == pixels._version:
            return self.last[2]
        step = images_per_call or len(pixels)
        parts = [self.vision_model(pixel_values=part).last_hidden_state for part in pixels.split(step)]
        features = parts[0] if len(parts) == 1 else torch.cat(parts)  # [B, N, D]
        self.last = (pixels, pixels._version, features)
        return features


class TrainableVision(nn.Module):
    """BLIP's vision encoder, finetuned with the decoder."""

    def __init__(self, vision_model):
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixels):
        return self.vision_model(pixel_values=pixels).last_hidden_state


class BlipCaptioner(ConditionalCaptioner):
    """BLIP as a captioner: rollouts with per-caption log-probabilities, beam search, MLE loss.

    Its input (``sender_input``) is preprocessed pixels: the vision encoder runs inside every rollout, so inputs
    are not cached (``cache_inputs`` is False).
    """

    cache_inputs = False

    def __init__(self, model, processor, prompt=DEFAULT_PROMPT, max_len=40, train_vision=False,
                 stop_at_any_period=False):  # fmt: skip
        super().__init__()
        self.switch_off_dropout(model)
        self.blip_config = model.config
        self.vision = TrainableVision(model.vision_model) if train_vision else FrozenVision(model.vision_model)
        self.text_decoder = model.text_decoder
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_len = max_len
        text_config = model.config.text_config
        self.sep_id, self.pad_id = text_config.sep_token_id, text_config.pad_token_id
        self.stop_ids = stop_token_ids(self.tokenizer, [self.sep_id], any_period=stop_at_any_period)
        # The prompt as BLIP's decoder reads it: [DEC] instead of [CLS], without the closing [SEP].
        prompt_ids = self.tokenizer(prompt).input_ids[:-1]
        prompt_ids[0] = text_config.bos_token_id
        self.register_buffer("prompt_ids", torch.tensor(prompt_ids), persistent=False)
        self._config = BlipCaptionerConfig(
            vision_hidden_size=model.config.vision_config.hidden_size,
            vision_layers=model.config.vision_config.num_hidden_layers,
            text_hidden_size=text_config.hidden_size,
            text_layers=text_config.num_hidden_layers,
            vocab_size=text_config.vocab_size,
            prompt=prompt,
            train_vision=train_vision,
        )

    @property
    def config(self):
        return self._config

    def image_transform(self, image):
        """PIL image -> pixels ``[3, H, W]`` through BLIP's image processor."""
        return self.processor.image_processor(images=image, return_tensors="pt").pixel_values[0]

    def encode_images(self, pixels):
        """BLIP's captioner input is the pixels themselves."""
        return pixels

    def trainable_parameters(self):
        """The text decoder's parameters (and the vision encoder's with ``--blip_train_vision``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _prompt(self, batch_size):
        return self.prompt_ids.unsqueeze(0).expand(batch_size, -1)  # [B, P]

    def encode(self, pixels):
        """The frozen vision encoder's output ``[B, N, D]`` (the pixels themselves when the encoder trains)."""
        return self.encode_in_parts(pixels)

    def encode_in_parts(self, pixels, images_per_call=None):
        return self.vision(pixels, images_per_call) if isinstance(self.vision, FrozenVision) else pixels

    def condition_of(self, encoded):
        """The vision encoder's output ``[B, N, D]`` the text decoder cross-attends to (fp32 outside autocast)."""
        features = encoded if isinstance(self.vision, FrozenVision) else self.vision(encoded)
        return features if torch.is_autocast_enabled(features.device.type) else features.float()

    @property
    def lm_head(self):
        return self.text_decoder.cls.predictions.decoder

    def _hidden(self, image_embeds, tokens):
        """The LM head's inputs ``[B, T, E]`` at the positions predicting ``tokens`` [B, T] after the prompt."""
        prompt = self._prompt(tokens.shape[0])
        ones = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
        states = self.text_decoder.bert(
            input_ids=torch.cat([prompt, tokens], dim=1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=ones,
            is_decoder=True,
            use_cache=False,
        ).last_hidden_state  # [B, P + T, E]
        return self.text_decoder.cls.predictions.transform(states[:, prompt.shape[1] - 1 : -1])

    def _generate(self, image_embeds, sample=False, **settings):
        """``generate``'s output: sequences ``[B, P + T]``, the prompt then the caption."""
        generation = self._generation_config(self.pad_id, **settings)
        ones = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
        return generate_with(
            self.text_decoder,
            generation,
            sample,
            input_ids=self._prompt(image_embeds.shape[0]),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=ones,
        )

    def _decode_tokens(self, image_embeds, **decoding):
        sequences = self._generate(image_embeds, **decoding)  # [B, P + T]
        return pad_to(sequences[:, self.prompt_ids.shape[0] :], self.max_len, self.pad_id)

    def mle_loss(self, pixels, captions):
        """Mean token cross-entropy of reference ``captions`` after the prompt (BLIP's captioning objective)."""
        rows = [self.tokenizer(caption).input_ids[1:][: self.max_len] for caption in captions]  # drop [CLS]
        tokens, labels = pad_batch(rows, self.pad_id)  # [B, T]; captions end with [SEP]
        device = pixels.device
        logits = self._logits(self.condition(pixels), tokens.to(device))
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.to(device).flatten())

    def save_pretrained(self, directory):
        """Writes ``directory/blip`` as a transformers directory (model and processor); returns its path."""
        path = os.path.join(directory, "blip")
        model = BlipForConditionalGeneration(self.blip_config)
        model.vision_model.load_state_dict(self.vision.vision_model.state_dict())
        model.text_decoder.load_state_dict(self.text_decoder.state_dict())
        with atomic_directory(path) as staging:
            model.save_pretrained(staging)
            self.processor.save_pretrained(staging)
        return path


def load_blip_captioner(opts):
    """BLIP of ``--blip_model`` (a hub id such as Salesforce/blip-image-captioning-base, or a local directory)."""
    model = from_pretrained_strict(BlipForConditionalGeneration, opts.blip_model, "--blip_model", "BLIP")
    try:
        processor = BlipProcessor.from_pretrained(opts.blip_model)
    except (OSError, ValueError) as error:
        raise missing_weights("the BLIP processor", opts.blip_model, "--blip_model", error) from error
    return BlipCaptioner(model, processor, prompt=opts.blip_prompt, max_len=opts.max_len,
                         train_vision=opts.blip_train_vision,
                         stop_at_any_period=opts.stop_at_any_period)  # fmt: skip
