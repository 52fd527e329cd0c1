"""Frozen text-to-image retrievers: score captions against candidate images.

A retriever is a ``FrozenModule`` with ``encode_images(pixels) -> [N, D]``, ``encode_texts(list[str]) -> [N, D]``
(both fp32 and L2-normalised), ``image_transform`` (PIL image -> pixel tensor) and ``temperature`` (the softmax
temperature its own training used, 1 / exp(logit_scale)).  CLIP has two backends: the ``clip`` package (OpenAI's
code and files, the default) and transformers' ``CLIPModel``.  Each loads only when chosen.
"""

from ..lazy import exports, load

CLIP_BACKENDS = {"openai": (".clip", "load_clip_retriever"), "transformers": (".hf_clip", "load_hf_clip_retriever")}
RETRIEVERS = ("clip",)
_EXPORTS = {"ClipRetriever": ".clip", "HFClipRetriever": ".hf_clip"}


def build_retriever(opts):
    """The retriever named by ``--retriever`` (and ``--clip_backend``)."""
    return load(__name__, CLIP_BACKENDS[opts.clip_backend])(opts)


__getattr__ = exports(__name__, _EXPORTS)  # the classes load on first use (PEP 562)


__all__ = ["CLIP_BACKENDS", "ClipRetriever", "HFClipRetriever", "RETRIEVERS", "build_retriever"]
