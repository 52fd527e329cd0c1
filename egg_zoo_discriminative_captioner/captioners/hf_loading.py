"""Loading a transformers captioner for ``--captioner hf``: the model (strictly, in fp32; a PEFT adapter
directory with its base), its processor, and the options that say what trains."""

import json
import os

from ..runtime.errors import UsageError, missing_weights
from .hf import HFCaptioner, peft_warnings_off
from .hf_folders import check_captioner_folder

ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter directory


def load_processor(source, flag):
    """``AutoProcessor`` of ``source``, or its image processor and tokenizer where it has no processor class."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        processor = AutoProcessor.from_pretrained(source)
        if getattr(processor, "image_processor", None) is None:
            processor = ImageAndText(AutoImageProcessor.from_pretrained(source), AutoTokenizer.from_pretrained(source))
    except (OSError, ValueError) as error:
        raise missing_weights("the model's processor", source, flag, error) from error
    return processor


class ImageAndText:
    """An image processor and a tokenizer where a model has no processor class (``VisionEncoderDecoderModel``)."""

    chat_template = None

    def __init__(self, image_processor, tokenizer):
        self.image_processor, self.tokenizer = image_processor, tokenizer

    def __call__(self, images, text=None, return_tensors="pt"):
        inputs = dict(self.image_processor(images=images, return_tensors=return_tensors))
        if text is not None and any(text):
            inputs.update(self.tokenizer(text, return_tensors=return_tensors))
        return inputs

    def save_pretrained(self, directory):
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def load_model(source, flag):
    """The transformers model of ``source`` in fp32 (a hub id or directory; a PEFT adapter directory loads its
    base model with the adapters merged into the weights: further training starts from there)."""
    from transformers import AutoModelForImageTextToText

    from ..runtime.pretrained import from_pretrained_strict

    adapter_config = os.path.join(source, ADAPTER_CONFIG) if os.path.isdir(source) else None
    if adapter_config and os.path.isfile(adapter_config):
        from peft import PeftModel

        with open(adapter_config) as f:
            base = json.load(f).get("base_model_name_or_path")
        model = from_pretrained_strict(AutoModelForImageTextToText, base, flag, "the adapters' base model")
        with peft_warnings_off():
            return PeftModel.from_pretrained(model, source).merge_and_unload().eval()
    return from_pretrained_strict(AutoModelForImageTextToText, source, flag, "the transformers captioner")


def checkpoint_activations(model):
    """Each layer's activations are recomputed in the backward instead of kept (``--gradient_checkpointing``)."""
    if not model.supports_gradient_checkpointing:
        raise UsageError(f"--gradient_checkpointing: {type(model).__name__} does not support it")
    # transformers 5 renamed it and warns at the old name (which older releases alone have)
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_hf_captioner(opts):
    """The captioner of ``--hf_model`` (a hub id or a local directory, model + processor)."""
    if not opts.hf_model:
        raise UsageError("--captioner hf needs --hf_model (a transformers hub id or a local directory)")
    named = opts.hf_model_named or f"--hf_model {opts.hf_model}"  # evaluate's: --models hf:DIR
    check_captioner_folder(opts.hf_model, named)
    flag = named.split(" ")[0]
    model = load_model(opts.hf_model, flag)
    if opts.gradient_checkpointing:
        checkpoint_activations(model)
    lora = None
    if opts.lora_rank:
        lora = {"rank": opts.lora_rank, "alpha": opts.lora_alpha, "targets": opts.lora_targets}
    return HFCaptioner(model, load_processor(opts.hf_model, flag), prompt=opts.hf_prompt,
                       instruction=opts.hf_instruction, max_len=opts.max_len, train_vision=opts.hf_train_vision,
                       stop_at_any_period=opts.stop_at_any_period,
                       image_size=opts.hf_image_size, lora=lora, merge_lora=opts.merge_lora)  # fmt: skip
