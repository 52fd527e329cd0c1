"""A local folder for ``--captioner hf``, checked before anything loads: each problem in one line that names what
is missing or wrong there and the flag that took the folder (``--hf_model``, ``evaluate --models hf:``, ...).

A hub id is left to transformers (a download that cannot happen offline is reported by ``errors.missing_weights``);
a name that looks like a path (``/``, ``./``, ``../``, ``~``) and is no directory is said to be none.
"""

import json
import os

from ..runtime.errors import UsageError

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
PROCESSORS = ("preprocessor_config.json", "processor_config.json")
TOKENIZERS = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# Dual encoders: retrievers (--clip_model with --clip_backend transformers), not captioners.
RETRIEVER_TYPES = {"clip", "siglip", "siglip2", "chinese_clip", "altclip", "align", "clip_vision_model"}


def looks_like_a_path(source):
    return source.startswith(("/", "./", "../", "~")) or os.path.isabs(source)


def check_captioner_folder(source, where):
    """Refuses, in one line, a local ``source`` that cannot be an image-to-text model with its processor; ``where``
    is how the command line named it (``--hf_model DIR``, ``--models hf:DIR``)."""
    if not os.path.isdir(source):
        if looks_like_a_path(source):
            raise UsageError(f"{where}: no such directory")
        return
    if os.path.isfile(os.path.join(source, "adapter_config.json")):  # PEFT adapters: the base is checked on loading
        if not _has_any(source, ADAPTER_WEIGHTS):
            raise UsageError(f"{where}: a PEFT adapter folder without its weights ({' or '.join(ADAPTER_WEIGHTS)})")
        return
    config = _config(source, where)
    model_type = config.get("model_type", "")
    if model_type in RETRIEVER_TYPES:
        raise UsageError(f"{where} holds a {model_type} retriever (a dual encoder), not a captioner: give it to "
                         "--clip_model with --clip_backend transformers, and --hf_model an image-to-text model")
    if not _reads_images(model_type):
        architectures = ", ".join(config.get("architectures") or []) or model_type or "an unnamed model"
        raise UsageError(f"{where} holds {architectures}, which reads no images: --captioner hf needs an "
                         "image-to-text model (what AutoModelForImageTextToText loads)")
    if not _has_any(source, WEIGHTS):
        raise UsageError(f"{where}: no weights there (none of {', '.join(WEIGHTS)})")
    if not _has_any(source, PROCESSORS):
        raise UsageError(f"{where}: no image processor there (none of {', '.join(PROCESSORS)}); save the model's "
                         "processor into the folder too (processor.save_pretrained)")
    if not _has_any(source, TOKENIZERS):
        raise UsageError(f"{where}: no tokenizer files there (none of {', '.join(TOKENIZERS)}); save the tokenizer "
                         "into the folder too (tokenizer.save_pretrained)")


def _has_any(directory, names):
    return any(os.path.isfile(os.path.join(directory, name)) for name in names)


def _config(source, where):
    path = os.path.join(source, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except OSError:
        raise UsageError(f"{where}: no config.json there, so not a transformers model folder") from None
    except ValueError as error:
        raise UsageError(f"{where}: config.json is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{where}: config.json does not hold a model configuration")
    return config


def _reads_images(model_type):
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or model_type == "vision-encoder-decoder"
