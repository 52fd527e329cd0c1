"""OpenAI CLIP as the frozen retriever, through the ``clip`` package."""

import torch
import torch.nn.functional as F

from ..runtime.clip_loading import clip, load_clip
from ..runtime.precision import dtype_of
from ..runtime.pretrained import FrozenModule


class ClipRetriever(FrozenModule):
    """Scores captions against images with a frozen ``clip.model.CLIP``.

    Embeddings are computed in ``precision`` and cast to fp32 before normalisation, so scores are fp32 on every
    device.  ``temperature`` is the model's own, 1 / exp(logit_scale) (0.01 for the released CLIP models).
    """

    def __init__(self, model, image_transform, precision="fp32"):
        super().__init__()
        self.model = model.to(dtype_of(precision))
        self.image_transform = image_transform
        self.context_length = model.context_length
        self.temperature = float(1.0 / model.logit_scale.detach().float().exp())
        self.freeze()

    @property
    def device(self):
        return self.model.positional_embedding.device

    @torch.no_grad()
    def encode_images(self, pixels):
        """Normalised image embeddings ``[N, D]`` (fp32) of preprocessed pixels ``[N, 3, H, W]``."""
        pixels = pixels.to(self.device, self.model.dtype)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts):
        """Normalised text embeddings ``[N, D]`` (fp32); texts longer than the context are truncated."""
        tokens = clip.tokenize(list(texts), context_length=self.context_length, truncate=True)
        return F.normalize(self.model.encode_text(tokens.to(self.device)).float(), dim=-1)


def load_clip_retriever(opts):
    """The retriever of ``--clip_model`` (a CLIP model name or a local ``.pt`` path)."""
    model, transform = load_clip(opts.clip_model, "--clip_model", opts.clip_download_root)
    return ClipRetriever(model, transform, precision=opts.retriever_precision)
