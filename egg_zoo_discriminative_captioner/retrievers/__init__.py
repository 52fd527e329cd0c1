"""Frozen text-to-image retrievers: score captions against candidate images.

A retriever is a ``FrozenModule`` with ``encode_images(pixels) -> [N, D]``, ``encode_texts(list[str]) -> [N, D]``
(both fp32 and L2-normalised), ``image_transform`` (PIL image -> pixel tensor) and ``temperature`` (the softmax
temperature its own training used, 1 / exp(logit_scale)).
"""

from .clip import ClipRetriever, load_clip_retriever

RETRIEVERS = {"clip": load_clip_retriever}


def build_retriever(opts):
    """The retriever named by ``--retriever``."""
    return RETRIEVERS[opts.retriever](opts)


__all__ = ["ClipRetriever", "RETRIEVERS", "build_retriever", "load_clip_retriever"]
