"""ClipCap's released checkpoint files: reading them strictly, writing them back, building the captioner.

A released file is a plain ``state_dict`` of ``ClipCaptionModel``: ``clip_project.*`` (the mapper) and ``gpt.*``
(GPT-2), plus, per GPT-2 layer, the causal-mask buffers ``attn.bias`` and ``attn.masked_bias`` that the
transformers version of the time saved and current versions no longer have.  Those are the only keys set aside
(by name); they are written back unchanged, so a finetuned file has the released layout.
"""

import os

import torch
from transformers import AutoConfig, AutoTokenizer, GPT2LMHeadModel

from ..runtime.clip_loading import load_clip
from ..runtime.errors import UsageError, missing_weights, unreadable_file
from ..runtime.pretrained import from_pretrained_strict
from .clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel, ClipImageEncoder

RELEASED_FILES = "coco_weights.pt or conceptual_weights.pt from github.com/rmokady/CLIP_prefix_caption"


def is_legacy_buffer(key):
    """GPT-2 causal-mask buffers of old transformers versions (a suffix test: ``attn.c_attn.bias`` is real)."""
    return key.startswith("gpt.transformer.h.") and key.endswith((".attn.bias", ".attn.masked_bias"))


def _describe(keys, limit=6):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def mapper_layout(state_dict):
    """Mapper kind, prefix length, clip length and depth that a ClipCap state dict was saved with."""
    embedding_size = state_dict["gpt.transformer.wte.weight"].shape[1]
    if "clip_project.model.0.weight" in state_dict:
        prefix_length = state_dict["clip_project.model.2.weight"].shape[0] // embedding_size
        return {"mapping_type": "mlp", "prefix_length": prefix_length}
    if "clip_project.linear.weight" in state_dict:
        layers = {key.split(".")[3] for key in state_dict if key.startswith("clip_project.transformer.layers.")}
        return {
            "mapping_type": "transformer",
            "prefix_length": state_dict["clip_project.prefix_const"].shape[0],
            "clip_length": state_dict["clip_project.linear.weight"].shape[0] // embedding_size,
            "num_layers": len(layers),
        }
    raise UsageError("not a ClipCap state dict: it has neither an MLP nor a transformer mapper (clip_project.*)")


def load_clipcap_state_dict(model, state_dict, source="checkpoint"):
    """Loads a ClipCap state dict strictly; only the legacy GPT-2 buffers are set aside, by name."""
    legacy = {key: value for key, value in state_dict.items() if is_legacy_buffer(key)}
    state_dict = {key: value for key, value in state_dict.items() if key not in legacy}
    expected = model.state_dict()
    missing, unexpected = expected.keys() - state_dict.keys(), state_dict.keys() - expected.keys()
    wrong_shape = [
        f"{key} {tuple(state_dict[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected.keys() & state_dict.keys()
        if state_dict[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {_describe(wrong_shape)}")
    if problems:
        raise UsageError(f"{source} does not match the ClipCap architecture {model.config}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)
    model.legacy_buffers = legacy


def read_clipcap_file(path):
    """The state dict in a ClipCap ``.pt`` file; a missing or unreadable file is a UsageError saying what it is."""
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "not found"
        raise UsageError(f"ClipCap checkpoint {path} {what} (--clipcap_checkpoint takes a .pt file: the released "
                         f"files are {RELEASED_FILES})")  # fmt: skip
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a state dict
        raise UsageError(f"cannot read ClipCap checkpoint {path} (--clipcap_checkpoint): "
                         f"{unreadable_file(path, error, 'a ClipCap state dict')}") from None  # fmt: skip
    if not isinstance(state_dict, dict) or "gpt.transformer.wte.weight" not in state_dict:
        raise UsageError(f"{path} (--clipcap_checkpoint) is a PyTorch file but not a ClipCap state dict (no "
                         f"gpt.transformer.wte.weight; the released files are {RELEASED_FILES})")  # fmt: skip
    return state_dict


def load_language_model(source):
    """GPT-2 architecture (randomly initialised) and tokenizer from a hub id or a local transformers directory."""
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise missing_weights("the GPT-2 config and tokenizer", source, "--language_model", error) from error
    return GPT2LMHeadModel(config), tokenizer


def clipcap_config(opts, state_dict, prefix_size):
    """The architecture of ``--clipcap_checkpoint``: read off the file where an option leaves it open."""
    layout = mapper_layout(state_dict)
    if opts.mapping_type not in ("auto", layout["mapping_type"]):
        raise UsageError(
            f"--mapping_type {opts.mapping_type} but {opts.clipcap_checkpoint} holds a {layout['mapping_type']} mapper"
        )
    mapping_type = layout["mapping_type"]
    normalize = opts.normalize_prefix
    if normalize is None:  # the released transformer-mapper model takes L2-normalised features, the MLP ones raw
        normalize = mapping_type == "transformer"
    return ClipCapConfig(
        prefix_length=opts.prefix_length or layout["prefix_length"],
        prefix_size=prefix_size,
        mapping_type=mapping_type,
        clip_length=opts.clip_length or layout.get("clip_length", ClipCapConfig.clip_length),
        num_layers=layout.get("num_layers", ClipCapConfig.num_layers),
        normalize_prefix=normalize,
    )


def load_clipcap_captioner(opts):
    """The ClipCap captioner of ``--clipcap_checkpoint``, ``--language_model`` and ``--captioner_clip_model``."""
    if opts.clipcap_checkpoint is None:
        raise UsageError(f"--captioner clipcap needs --clipcap_checkpoint PATH: {RELEASED_FILES}")
    state_dict = read_clipcap_file(opts.clipcap_checkpoint)
    clip_model, transform = load_clip(opts.captioner_clip_model, "--captioner_clip_model", opts.clip_download_root)
    gpt, tokenizer = load_language_model(opts.language_model)
    model = ClipCapModel(clipcap_config(opts, state_dict, clip_model.visual.output_dim), gpt)
    load_clipcap_state_dict(model, state_dict, source=opts.clipcap_checkpoint)
    return ClipCapCaptioner(model, tokenizer, ClipImageEncoder(clip_model, transform), max_len=opts.max_len,
                            stop_at_any_period=opts.stop_at_any_period)  # fmt: skip


def load_pretrained_language_model(source):
    """The pretrained GPT-2 of ``--language_model`` (weights included, loaded strictly): the authors' KL
    reference, the language model ClipCap was initialised from, read without any image."""
    return from_pretrained_strict(GPT2LMHeadModel, source, "--language_model", "the GPT-2 language model")
