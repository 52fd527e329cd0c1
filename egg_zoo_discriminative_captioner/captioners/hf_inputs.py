"""What a transformers captioner's model reads besides the caption (``hf.HFCaptioner``).

Built once: the prompt (``--hf_prompt``, or with a chat template the user turn ``--hf_instruction``), and, from one
probe image through the processor, the prompt's token ids, the processor outputs aligned with them, and the image
inputs that are the same for every image (a patch grid, a pixel mask).  Then, per batch, the model's keyword
inputs: ``model_inputs`` for the images, ``text_inputs`` for the prompt and the caption tokens after it.
"""

from typing import NamedTuple, Optional

import torch
from PIL import Image

from ..runtime.errors import UsageError

# Processor outputs aligned with the prompt's tokens, and their value at a caption's tokens: PaliGemma's prefix
# (0) / suffix (1) marks, Qwen2-VL's text (0) / image (1) marks.
PROMPT_ALIGNED = {"token_type_ids": 1, "mm_token_type_ids": 0}
PROBE_SIZES = ((64, 48), (40, 72))  # two shapes of probe image: a processor whose outputs differ resizes first
DEFAULT_IMAGE_SIZE = 224


class Probe(NamedTuple):
    """What every image's model inputs share, read off one probe image."""

    prompt_ids: Optional[torch.Tensor]  # [P]; None: the model reads no text
    prompt_aligned: dict  # the processor's outputs aligned with the prompt, [P] each (PROMPT_ALIGNED)
    shared_inputs: dict  # the image processor's outputs besides the pixels, one image's: [1, ...] each
    patches: bool  # an image's pixels are its patches ``[patches, D]``, concatenated along a batch


def prompt_text(processor, prompt, instruction):
    """The text the model reads before each caption: ``prompt``, or where the processor has a chat template (and
    ``instruction`` is given or ``prompt`` is empty) the user turn ``instruction`` with the image, then the start
    of the assistant's turn."""
    template = getattr(processor, "chat_template", None)
    if instruction is not None or (template and not prompt):
        if not template:
            raise UsageError("--hf_instruction needs a model whose processor has a chat template")
        content = [{"type": "image"}, {"type": "text", "text": instruction or "Describe the image."}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)  # fmt: skip
    return prompt


def image_inputs(image_processor, image):
    """The image processor's outputs for one PIL image, ``[1, ...]`` each."""
    return dict(image_processor(images=[image.convert("RGB")], return_tensors="pt"))


def resize_size(image_processor, image_size):
    """``image_size`` if given; else ``DEFAULT_IMAGE_SIZE`` where the processor's outputs depend on an image's size
    (Qwen2-VL, Idefics3: two probe images of other shapes disagree), so that every image is resized first; else
    None."""
    if image_size is not None:
        return image_size
    shapes = [image_inputs(image_processor, Image.new("RGB", size)) for size in PROBE_SIZES]
    same = all(shapes[0][key].shape == shapes[1][key].shape for key in shapes[0])
    same = same and all(torch.equal(shapes[0][k], shapes[1][k]) for k in shapes[0] if k != "pixel_values")
    return None if same else DEFAULT_IMAGE_SIZE


def resized(image, image_size):
    """``image`` as a square of ``image_size`` (None: as it is)."""
    if image_size is None:
        return image
    return image.convert("RGB").resize((image_size, image_size), Image.BICUBIC)


def probe(processor, image, prompt, reads_text, decoder_only, accepted):
    """The ``Probe`` of one probe ``image`` (already ``resized``): through the whole processor with ``prompt``
    where the model reads text (``reads_text``), else through its image processor alone.  ``accepted``: the
    names the model's ``forward`` takes (a BERT tokenizer's token types mean nothing to it)."""
    image_processor = processor.image_processor
    inputs = processor(images=[image], text=[prompt], return_tensors="pt") if reads_text else image_inputs(
        image_processor, image)  # fmt: skip
    prompt_ids = inputs.get("input_ids")
    if prompt_ids is not None:
        prompt_ids = prompt_ids[0]
        tokenizer = getattr(processor, "tokenizer", processor)
        sep = tokenizer.sep_token_id
        if decoder_only and sep is not None and sep != tokenizer.bos_token_id:
            while len(prompt_ids) > 1 and int(prompt_ids[-1]) == sep:  # BERT's closing [SEP] (GIT)
                prompt_ids = prompt_ids[:-1]
    aligned = {key: inputs[key][0, : len(prompt_ids)] for key in PROMPT_ALIGNED if key in inputs and key in accepted}
    image_keys = set(image_inputs(image_processor, image)) - {"pixel_values"}
    shared = {key: inputs[key] for key in image_keys if torch.is_tensor(inputs.get(key))}
    return Probe(prompt_ids, aligned, shared, "image_grid_thw" in inputs)


def model_inputs(pixels, shared_inputs, patches):
    """The model's image inputs for a batch of pixels ``[B, ...]``: the pixels (a patch model's concatenated) and
    every image's copy of the ``shared_inputs``."""
    batch = pixels.shape[0]
    inputs = {"pixel_values": pixels.flatten(0, 1) if patches else pixels}
    for key, value in shared_inputs.items():  # one image's: [1, ...] -> [B, ...]
        inputs[key] = value.to(pixels.device).repeat(batch, *[1] * (value.dim() - 1))
    return inputs


def text_inputs(prompt_ids, prompt_aligned, batch, tokens=None):
    """``input_ids`` (the prompt, then ``tokens`` [B, T] if given), their attention mask and the processor's
    ``prompt_aligned`` inputs, for a batch of ``batch``."""
    ids = prompt_ids.unsqueeze(0).expand(batch, -1)  # [B, P]
    if tokens is not None:
        ids = torch.cat([ids, tokens], dim=1)  # [B, P + T]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for key, values in prompt_aligned.items():
        values = values.to(ids.device).unsqueeze(0).expand(batch, -1)
        if tokens is not None:
            values = torch.cat([values, torch.full_like(tokens, PROMPT_ALIGNED[key])], dim=1)
        inputs[key] = values
    return inputs
