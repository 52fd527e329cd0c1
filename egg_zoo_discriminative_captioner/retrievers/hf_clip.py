"""OpenAI CLIP as the frozen retriever, through transformers' ``CLIPModel`` (``--clip_backend transformers``)."""

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from ..errors import missing_weights
from ..frozen import FrozenModule
from ..precision import dtype_of
from ..pretrained import from_pretrained_strict


def _embedding(output):
    # transformers >= 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor
    return getattr(output, "pooler_output", output)


class HFClipRetriever(FrozenModule):
    """Scores captions against images with a frozen transformers ``CLIPModel``.

    Same contract as ``ClipRetriever``: embeddings in ``precision``, normalised in fp32; ``temperature`` is
    1 / exp(logit_scale).
    """

    def __init__(self, model, tokenizer, image_processor, precision="fp32"):
        super().__init__()
        self.model = model.to(dtype_of(precision))
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.context_length = model.config.text_config.max_position_embeddings
        self.temperature = float(1.0 / model.logit_scale.detach().float().exp())
        self.freeze()

    @property
    def device(self):
        return self.model.logit_scale.device

    def image_transform(self, image):
        """PIL image -> pixels ``[3, H, W]`` through the model's own image processor."""
        return self.image_processor(images=image, return_tensors="pt").pixel_values[0]

    @torch.no_grad()
    def encode_images(self, pixels):
        """Normalised image embeddings ``[N, D]`` (fp32) of preprocessed pixels ``[N, 3, H, W]``."""
        pixels = pixels.to(self.device, self.model.dtype)
        return F.normalize(_embedding(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts):
        """Normalised text embeddings ``[N, D]`` (fp32); texts longer than the context are truncated."""
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        ).to(self.device)
        return F.normalize(_embedding(self.model.get_text_features(**tokens)).float(), dim=-1)


def load_hf_clip_retriever(opts):
    """The retriever of ``--clip_model`` (a hub id such as openai/clip-vit-base-patch32, or a local directory)."""
    model = from_pretrained_strict(CLIPModel, opts.clip_model, "--clip_model", "transformers CLIP")
    try:
        tokenizer = AutoTokenizer.from_pretrained(opts.clip_model)
        image_processor = CLIPImageProcessor.from_pretrained(opts.clip_model)
    except (OSError, ValueError) as error:
        raise missing_weights("the CLIP tokenizer and processor", opts.clip_model, "--clip_model", error) from error
    return HFClipRetriever(model, tokenizer, image_processor, precision=opts.retriever_precision)
