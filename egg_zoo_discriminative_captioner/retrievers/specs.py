"""``evaluate --eval_retrievers SPEC ...``: retrievers the captioners were not trained against (a reward-hacking
check).  The same captions are scored by each over the same candidate sets as the main retriever, each with its
own feature cache of image embeddings (``experiment.retriever_cache_role``).

A SPEC is ``[LABEL=]BACKEND:MODEL[:PRETRAINED]``: ``openai:ViT-L/14`` or ``openai:FILE.pt``,
``transformers:google/siglip-base-patch16-224`` or ``transformers:DIRECTORY``, ``open_clip:ViT-B-32:TAG_OR_FILE``
or ``open_clip:local-dir:DIRECTORY`` / ``open_clip:hf-hub:ORG/REPO`` (which bring their own weights).  No torch
here: specs are parsed with the options.
"""

import os
from dataclasses import dataclass

from ..runtime.errors import UsageError
from . import CLIP_BACKENDS

FLAG = "--eval_retrievers"
SCHEMAS = ("hf-hub:", "local-dir:")  # open_clip model names that bring their own weights
FORM = (
    "[LABEL=]BACKEND:MODEL[:PRETRAINED], BACKEND one of " + ", ".join(sorted(CLIP_BACKENDS)) + " (e.g. "
    "openai:ViT-L/14, transformers:google/siglip-base-patch16-224, open_clip:ViT-B-32:laion2b_s34b_b79k, "
    "open_clip:ViT-B-32:FILE)"
)


@dataclass(frozen=True)
class RetrieverSpec:
    """One retriever of ``--eval_retrievers``: ``--clip_backend``, ``--clip_model`` and ``--clip_pretrained``."""

    label: str
    backend: str
    model: str
    pretrained: str = None
    text: str = ""  # as given

    def options(self, config):
        """``config`` with this retriever's options (precision and download folder stay the command line's)."""
        return config.replace(clip_backend=self.backend, clip_model=self.model, clip_pretrained=self.pretrained)

    def flags(self):
        """How to pass this retriever's model and its open_clip weights as files, for the missing-file report
        (with its label only where the command line gave one)."""
        label = f"{self.label}=" if self.text.startswith(f"{self.label}=") else ""
        return f"{FLAG} {label}{self.backend}:PATH", f"{FLAG} {label}open_clip:{self.model}:FILE"


def _short(name):
    """A local path by its base name (labels stay short), anything else as given."""
    return os.path.basename(name.rstrip("/" + os.sep)) if os.path.exists(name) else name


def names_backend(text):
    """Whether a ``--clip_model`` value is a ``BACKEND:MODEL[:PRETRAINED]`` spec rather than a plain model name."""
    backend, colon, _ = text.partition(":")
    return bool(colon) and backend in CLIP_BACKENDS


def parse_retriever(text, flag=FLAG):
    """``[LABEL=]BACKEND:MODEL[:PRETRAINED]`` -> RetrieverSpec; a malformed SPEC is a one-line UsageError naming
    ``flag``."""
    head, equals, rest = text.partition("=")
    labelled = bool(equals) and ":" not in head and os.sep not in head
    label, what = (head, rest) if labelled else ("", text)
    if labelled and not label.strip():
        raise UsageError(f"{flag} {text}: the LABEL before '=' is empty; give {FORM}")
    if "|" in label:
        raise UsageError(f"{flag} {text}: a LABEL cannot hold '|' (it heads a column of tables.md)")
    backend, colon, rest = what.partition(":")
    if not colon or backend not in CLIP_BACKENDS:
        named = f"{backend!r} is not a backend" if colon else "no BACKEND:"
        raise UsageError(f"{flag} {text}: {named}; give {FORM}")
    pretrained = None
    if backend == "open_clip" and not rest.startswith(SCHEMAS):
        model, _, pretrained = rest.partition(":")
        if not model or not pretrained:
            forms = "open_clip:MODEL:PRETRAINED (a tag or a checkpoint file), or open_clip:local-dir:DIRECTORY"
            raise UsageError(f"{flag} {text}: open_clip needs its weights: {forms} / open_clip:hf-hub:ORG/REPO")
    else:
        model = rest
        if ":" in model and not os.path.exists(model) and not rest.startswith(SCHEMAS):
            raise UsageError(f"{flag} {text}: the {backend} backend takes no PRETRAINED (give {backend}:MODEL, "
                             f"MODEL a name or a path); PRETRAINED is open_clip's")  # fmt: skip
    if rest in SCHEMAS:
        raise UsageError(f"{flag} {text}: nothing after {rest} (open_clip:local-dir:DIRECTORY, "
                         "open_clip:hf-hub:ORG/REPO)")  # fmt: skip
    if not model:
        raise UsageError(f"{flag} {text}: no MODEL after {backend}:; give {FORM}")
    default = f"{backend}:{_short(model)}" + (f":{_short(pretrained)}" if pretrained else "")
    return RetrieverSpec(label or default, backend, model, pretrained, text)


def parse_retrievers(texts):
    """Every SPEC of ``--eval_retrievers`` (labels distinct)."""
    specs = [parse_retriever(text) for text in texts or ()]
    labels = [spec.label for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UsageError(f"{FLAG}: {', '.join(repeated)} named twice; give each retriever its own LABEL=")
    return specs
