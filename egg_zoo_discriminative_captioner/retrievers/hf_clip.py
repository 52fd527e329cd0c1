"""transformers dual encoders as the frozen retriever (``--clip_backend transformers``): CLIP (``CLIPModel``) and
SigLIP (``SiglipModel``, the fixed-resolution SigLIP 2 checkpoints included), each with its own tokenizer, text
length and image processor, all loaded from ``--clip_model``."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..runtime.errors import UsageError, missing_weights
from ..runtime.precision import dtype_of
from ..runtime.pretrained import FrozenModule, from_pretrained_strict


@dataclass(frozen=True)
class TextInputs:
    """How a family's text tower was trained to see a caption."""

    model_class: str  # the transformers class AutoModel picks for the family
    padding: object  # the tokenizer's padding: True pads to the longest caption, "max_length" to the context
    attention_mask: bool  # whether padding positions are masked out


# CLIP pools at its EOS token and masks padding.  SigLIP pools the last position of a caption padded to the full
# context (64 tokens) and was trained without an attention mask (big_vision and open_clip pass none; its pad token
# is its EOS), so it gets the padded ids alone.
TEXT_INPUTS = {
    "clip": TextInputs("CLIPModel", padding=True, attention_mask=True),
    "siglip": TextInputs("SiglipModel", padding="max_length", attention_mask=False),
}
UNSUPPORTED = {
    "siglip2": "a NaFlex SigLIP 2 (Siglip2Model), whose images are variable-size patch sequences, not pixel "
    "tensors; use a fixed-resolution SigLIP 2 checkpoint (google/siglip2-base-patch16-224, ...)",
}


def _embedding(output):
    # transformers >= 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor
    return getattr(output, "pooler_output", output)


class HFClipRetriever(FrozenModule):
    """Scores captions against images with a frozen transformers dual encoder (``CLIPModel``, ``SiglipModel``).

    Same contract as ``ClipRetriever``: embeddings in ``precision``, normalised in fp32; ``temperature`` is
    1 / exp(logit_scale).  SigLIP scores a pair as sigmoid(cos * exp(logit_scale) + logit_bias); the game's
    reward is the softmax of those logits over the candidates, in which ``logit_bias`` (kept for reference)
    cancels, so the model's own scale is the temperature for both families.
    """

    def __init__(self, model, tokenizer, image_processor, precision="fp32"):
        super().__init__()
        family = TEXT_INPUTS[model.config.model_type]
        self.temperature = float(1.0 / model.logit_scale.detach().float().exp())  # before any cast to fp16/bf16
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float())
        self.model = model.to(dtype_of(precision))
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.padding = family.padding
        self.attention_mask = family.attention_mask
        self.context_length = model.config.text_config.max_position_embeddings
        self.freeze()

    @property
    def device(self):
        return self.model.logit_scale.device

    def image_transform(self, image):
        """PIL image -> pixels ``[3, H, W]`` through the model's own image processor."""
        return self.image_processor(images=image, return_tensors="pt").pixel_values[0]

    def tokenize(self, texts):
        """The text tower's inputs for ``texts`` (``input_ids`` ``[N, T]``, with its ``attention_mask`` for CLIP),
        truncated to the context and padded as the family was trained: T is the context for SigLIP."""
        tokens = self.tokenizer(list(texts), padding=self.padding, truncation=True, max_length=self.context_length,
                                return_tensors="pt")  # fmt: skip
        names = ("input_ids", "attention_mask") if self.attention_mask else ("input_ids",)
        return {name: tokens[name].to(self.device) for name in names}

    @torch.no_grad()
    def encode_images(self, pixels):
        """Normalised image embeddings ``[N, D]`` (fp32) of preprocessed pixels ``[N, 3, H, W]``."""
        pixels = pixels.to(self.device, self.model.dtype)
        return F.normalize(_embedding(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts):
        """Normalised text embeddings ``[N, D]`` (fp32); texts longer than the context are truncated."""
        return F.normalize(_embedding(self.model.get_text_features(**self.tokenize(texts))).float(), dim=-1)


def load_hf_clip_retriever(opts):
    """The retriever of ``--clip_model`` (a hub id such as openai/clip-vit-base-patch32 or
    google/siglip-base-patch16-224, or a local directory saved with ``save_pretrained``)."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    source = opts.clip_model
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except (OSError, ValueError) as error:
        raise missing_weights("the transformers retriever", source, "--clip_model", error) from error
    if model_type not in TEXT_INPUTS:
        why = UNSUPPORTED.get(model_type, f"a {model_type} model")
        raise UsageError(f"--clip_model {source} is {why}; --clip_backend transformers takes "
                         f"{', '.join(f.model_class for f in TEXT_INPUTS.values())} dual encoders")  # fmt: skip
    model_class = getattr(transformers, TEXT_INPUTS[model_type].model_class)
    model = from_pretrained_strict(model_class, source, "--clip_model", f"transformers {model_type}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        image_processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise missing_weights(f"the {model_type} tokenizer and image processor", source, "--clip_model",
                              error) from error  # fmt: skip
    except ImportError as error:  # SigLIP's SentencePiece tokenizer needs the sentencepiece package
        raise UsageError(f"the tokenizer of {source} (--clip_model) needs a package: {error}") from error
    return HFClipRetriever(model, tokenizer, image_processor, precision=opts.retriever_precision)
