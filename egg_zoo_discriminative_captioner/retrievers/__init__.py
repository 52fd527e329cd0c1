"""Frozen text-to-image retrievers: score captions against candidate images.

A retriever is a ``FrozenModule`` with ``encode_images(pixels) -> [N, D]``, ``encode_texts(list[str]) -> [N, D]``
(both fp32 and L2-normalised), ``image_transform`` (PIL image -> pixel tensor) and ``temperature`` (the softmax
temperature its own training used, 1 / exp(logit_scale)).  CLIP has two backends: the ``clip`` package (OpenAI's
code and files, the default) and transformers' ``CLIPModel``.  Each loads only when chosen.
"""

import importlib

CLIP_BACKENDS = {"openai": (".clip", "load_clip_retriever"), "transformers": (".hf_clip", "load_hf_clip_retriever")}
RETRIEVERS = ("clip",)
_EXPORTS = {"ClipRetriever": ".clip", "HFClipRetriever": ".hf_clip"}


def build_retriever(opts):
    """The retriever named by ``--retriever`` (and ``--clip_backend``)."""
    module_name, function = CLIP_BACKENDS[opts.clip_backend]
    return getattr(importlib.import_module(module_name, package=__name__), function)(opts)


def __getattr__(name):  # the classes load on first use (PEP 562)
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], package=__name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CLIP_BACKENDS", "ClipRetriever", "HFClipRetriever", "RETRIEVERS", "build_retriever"]
