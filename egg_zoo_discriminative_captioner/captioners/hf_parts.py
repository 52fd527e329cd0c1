"""What a transformers image-to-text model is made of, read off the model: its EOS ids, its image placeholder
tokens, which parameters are its language model and which linear layers LoRA adapts."""

from torch import nn

from ..runtime.errors import UsageError

# Name components of the parameters outside the language part: vision towers, their projectors and Q-formers.
VISION_PARTS = {
    "vision_tower", "vision_model", "visual", "image_encoder", "vision_encoder", "qformer", "query_tokens",
    "multi_modal_projector", "language_projection", "visual_projection", "connector", "mm_projector",
    "image_projection", "image_pos_embed", "visual_temporal_embed", "img_projection",
}  # fmt: skip

def text_config(config):
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def _ids(value):
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def eos_ids(model, tokenizer):
    """The model's EOS ids: its generation config's, its text config's and the tokenizer's, in that order."""
    generation = getattr(model, "generation_config", None)
    found = [*_ids(getattr(generation, "eos_token_id", None)), *_ids(text_config(model.config).eos_token_id),
             *_ids(getattr(model.config, "eos_token_id", None)), *_ids(tokenizer.eos_token_id)]  # fmt: skip
    if not found:
        raise UsageError(f"{type(model).__name__}: neither its configs nor its tokenizer name an EOS token")
    return list(dict.fromkeys(found))


def placeholder_ids(model, processor):
    """Token ids that stand for image content (image, video and vision-boundary placeholders): a caption that
    held one would be read as an image slot by the scoring pass, so captions may not."""
    ids = set()
    for config in {id(c): c for c in (model.config, text_config(model.config))}.values():
        for key, value in config.to_dict().items():
            if isinstance(value, int) and key.endswith(("_token_id", "_token_index")) and any(
                    word in key for word in ("image", "video", "vision", "boi", "eoi")):  # fmt: skip
                ids.add(value)
    tokenizer = getattr(processor, "tokenizer", processor)
    for attribute in ("image_token", "video_token", "fake_image_token", "global_image_token", "boi_token",
                      "eoi_token"):  # fmt: skip
        token = getattr(processor, attribute, None)
        if isinstance(token, str):
            index = tokenizer.convert_tokens_to_ids(token)
            if index is not None and index != tokenizer.unk_token_id:
                ids.add(index)
    return sorted(ids)


def is_vision_parameter(name, encoder_decoder_vision):
    """Whether parameter ``name`` lies outside the language part (``encoder_decoder_vision``: the top-level
    ``encoder.`` is a vision encoder, as in ``VisionEncoderDecoderModel``)."""
    parts = name.split(".")
    return bool(VISION_PARTS.intersection(parts)) or (encoder_decoder_vision and parts[0] == "encoder")


def language_linear_layers(model, encoder_decoder_vision):
    """Full names of the language part's linear layers (GPT-2's ``Conv1D`` too), the output head left out."""
    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        linear = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
        if linear and module is not head and not is_vision_parameter(name, encoder_decoder_vision):
            names.append(name)
    return names


def frozen_vision_modules(model, encoder_decoder_vision):
    """The outermost modules of the vision part (tower, projector, Q-former) whose parameters are all frozen."""
    found = []
    for name, module in model.named_modules():
        parts = name.split(".")
        outside = VISION_PARTS.intersection(parts[-1:]) or (encoder_decoder_vision and name == "encoder")
        if not outside or any(name.startswith(f"{outer}.") for outer, _ in found):
            continue
        if not any(p.requires_grad for p in module.parameters()):
            found.append((name, module))
    return tuple(module for _, module in found)
