"""open_clip models (LAION, DataComp, MetaCLIP, SigLIP, ... weights) as the frozen retriever (``--clip_backend
open_clip``): ``--clip_model`` names the architecture, ``--clip_pretrained`` its weights (a tag or a local file)."""

import difflib
import os
import pickle

import torch
import torch.nn.functional as F

from ..runtime.errors import UsageError, missing_weights, unreadable_file
from ..runtime.precision import dtype_of
from ..runtime.pretrained import FrozenModule

# open_clip model names with a schema bring their own weights (and config, and tokenizer).
SCHEMAS = ("hf-hub:", "local-dir:")
# The preprocessing keys of open_clip's pretrained configs (``open_clip.transform.PreprocessCfg``).
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")


class OpenClipRetriever(FrozenModule):
    """Scores captions against images with a frozen open_clip ``CLIP`` / ``CustomTextCLIP``.

    Same contract as ``ClipRetriever``: embeddings in ``precision``, normalised in fp32; ``temperature`` is the
    model's own 1 / exp(logit_scale).  SigLIP models' ``logit_bias`` is kept for reference only: it shifts every
    candidate's score alike, so the softmax over candidates does not see it.
    """

    def __init__(self, model, tokenizer, image_transform, precision="fp32"):
        super().__init__()
        self.temperature = float(1.0 / model.logit_scale.detach().float().exp())  # before any cast to fp16/bf16
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float())
        self.model = model.to(dtype_of(precision))
        self.dtype = dtype_of(precision)
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.context_length = tokenizer.context_length
        self.freeze()

    @property
    def device(self):
        return self.model.logit_scale.device

    @torch.no_grad()
    def encode_images(self, pixels):
        """Normalised image embeddings ``[N, D]`` (fp32) of preprocessed pixels ``[N, 3, H, W]``."""
        pixels = pixels.to(self.device, self.dtype)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts):
        """Normalised text embeddings ``[N, D]`` (fp32); the model's own tokenizer truncates to its context."""
        tokens = self.tokenizer(list(texts))  # [N, context_length]
        return F.normalize(self.model.encode_text(tokens.to(self.device)).float(), dim=-1)


def _model_name(open_clip, name):
    """open_clip's spelling of ``--clip_model`` (ViT-B/32 -> ViT-B-32), which must have a config."""
    cleaned = name.replace("/", "-")
    if open_clip.get_model_config(cleaned) is None:
        close = difflib.get_close_matches(cleaned, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (open_clip.list_models() lists them)"
        raise UsageError(f"--clip_model {name!r} is not an open_clip model name{hint}")
    return cleaned


def _tags(open_clip, name):
    return ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"


def _shared_preprocessing(open_clip, name):
    """The preprocessing all of the model's pretrained tags agree on (SigLIP's mean and std, say), for a local
    checkpoint file, which carries none; nothing when they differ (open_clip's defaults, OpenAI's, apply)."""
    configs = [open_clip.get_pretrained_cfg(name, tag) for tag in open_clip.list_pretrained_tags_by_model(name)]
    shared = {}
    for key in PREPROCESS_KEYS:
        values = {tuple(value) if isinstance(value, list) else value for value in (c.get(key) for c in configs)}
        if len(values) == 1 and None not in values:
            shared[key] = values.pop()
    return shared


def _weights(open_clip, name, pretrained):
    """``create_model`` keyword arguments for ``--clip_pretrained``: a known tag (downloaded), or a local file."""
    if pretrained is None:
        raise UsageError(
            f"--clip_backend open_clip needs --clip_pretrained: a local checkpoint file, or one of the tags of "
            f"{name}: {_tags(open_clip, name)}"
        )
    tag = open_clip.get_pretrained_cfg(name, pretrained)
    if tag:
        return {"pretrained": pretrained, "force_quick_gelu": bool(tag.get("quick_gelu", False))}
    if os.path.isfile(pretrained):
        return {"pretrained": pretrained, "force_preprocess_cfg": _shared_preprocessing(open_clip, name)}
    if os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES) or os.path.exists(pretrained):
        state = "a directory, not a file" if os.path.isdir(pretrained) else "no such file"
        raise UsageError(f"--clip_pretrained {pretrained}: {state} (a checkpoint file of {name}, or a tag)")
    raise UsageError(
        f"--clip_pretrained {pretrained!r} is neither a file nor a tag of open_clip {name} (tags: "
        f"{_tags(open_clip, name)})"
    )


def _reason(path, error):
    if isinstance(error, (EOFError, pickle.UnpicklingError)):  # not a torch.save file of tensors
        return unreadable_file(path, error, "an open_clip state dict")
    return " ".join(str(error).split())[:400] or type(error).__name__  # strict loading: the keys that differ


def load_open_clip_retriever(opts):
    """The retriever of ``--clip_model`` (an open_clip model name, or ``hf-hub:`` / ``local-dir:``) with the
    weights of ``--clip_pretrained``; downloads go to ``--clip_download_root`` when it is set."""
    import open_clip

    name, pretrained, cache_dir = opts.clip_model, opts.clip_pretrained, opts.clip_download_root
    if name.startswith(SCHEMAS):
        if pretrained is not None:
            raise UsageError(f"--clip_model {name} brings its own weights: leave --clip_pretrained unset")
        weights, source, flag = {}, name, "--clip_model local-dir:DIRECTORY"
    else:
        name = _model_name(open_clip, name)
        weights, source = _weights(open_clip, name, pretrained), pretrained
        flag = "--clip_pretrained"
    try:
        # require_pretrained: random weights are an error, never a silent fallback
        model = open_clip.create_model(name, cache_dir=cache_dir, require_pretrained=True, **weights)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        if os.path.isfile(source):  # a file that is there but does not hold this model's weights
            raise UsageError(
                f"{source} ({flag}) does not load into open_clip {name}: {_reason(source, error)}"
            ) from error
        raise missing_weights(f"open_clip {name} weights", source, flag, error) from error
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    try:
        tokenizer = open_clip.get_tokenizer(name, context_length=model.context_length, cache_dir=cache_dir)
    except (OSError, RuntimeError, ValueError) as error:
        raise missing_weights(f"the tokenizer of open_clip {name}", name, "--clip_model local-dir:DIRECTORY",
                              error) from error  # fmt: skip
    return OpenClipRetriever(model.eval(), tokenizer, transform, precision=opts.retriever_precision)
