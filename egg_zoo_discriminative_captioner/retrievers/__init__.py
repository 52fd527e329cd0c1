"""Frozen text-to-image retrievers: score captions against candidate images.

A retriever is a ``FrozenModule`` with ``encode_images(pixels) -> [N, D]``, ``encode_texts(list[str]) -> [N, D]``
(both fp32 and L2-normalised), ``image_transform`` (PIL image -> pixel tensor) and ``temperature`` (the softmax
temperature its own training used, 1 / exp(logit_scale)).  CLIP has two backends: the ``clip`` package (OpenAI's
code and files, the default) and transformers' ``CLIPModel``.
"""

from .clip import ClipRetriever, load_clip_retriever
from .hf_clip import HFClipRetriever, load_hf_clip_retriever

CLIP_BACKENDS = {"openai": load_clip_retriever, "transformers": load_hf_clip_retriever}
RETRIEVERS = {"clip": lambda opts: CLIP_BACKENDS[opts.clip_backend](opts)}


def build_retriever(opts):
    """The retriever named by ``--retriever`` (and ``--clip_backend``)."""
    return RETRIEVERS[opts.retriever](opts)


__all__ = ["CLIP_BACKENDS", "ClipRetriever", "HFClipRetriever", "RETRIEVERS", "build_retriever"]
