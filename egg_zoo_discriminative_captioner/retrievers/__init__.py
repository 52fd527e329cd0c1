"""Frozen text-to-image retrievers: score captions against candidate images.

A retriever offers what ``base.Retriever`` says: image and caption embeddings (fp32, L2-normalised), its image
preprocessing and its own softmax temperature.  Three backends (``--clip_backend``), each with its own
tokenizer, context length and preprocessing: ``openai``, OpenAI CLIP through the ``clip`` package (the default);
``open_clip``, any open_clip model and pretrained tag (LAION, DataComp, SigLIP, ...); ``transformers``, CLIP and
SigLIP dual encoders through transformers.  Each loads only when chosen.
"""

from ..runtime.lazy import exports, load

CLIP_BACKENDS = {
    "openai": (".clip", "load_clip_retriever"),
    "open_clip": (".open_clip", "load_open_clip_retriever"),
    "transformers": (".hf_clip", "load_hf_clip_retriever"),
}
RETRIEVERS = ("clip",)
_EXPORTS = {"ClipRetriever": ".clip", "HFClipRetriever": ".hf_clip", "OpenClipRetriever": ".open_clip"}


def build_retriever(opts):
    """The retriever named by ``--retriever`` (and ``--clip_backend``)."""
    return load(__name__, CLIP_BACKENDS[opts.clip_backend])(opts)


__getattr__ = exports(__name__, _EXPORTS)  # the classes load on first use (PEP 562)


__all__ = ["CLIP_BACKENDS", "ClipRetriever", "HFClipRetriever", "OpenClipRetriever", "RETRIEVERS", "build_retriever"]
