"""OpenAI CLIP (ViT) weights in the transformers ``CLIPModel`` format, and CLIP's BPE as a transformers tokenizer.

The mapping follows the two architectures module by module; both use QuickGELU, pre-norm blocks, a class token
and a final projection without bias.  Only ViT image towers convert (transformers has no ModifiedResNet).
"""

import gzip
import os

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from ..runtime.clip_loading import CLIP_MEAN, CLIP_STD, clip
from ..runtime.errors import UsageError


def _blocks(state_dict, prefix):
    return sorted({int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix)})


# Per transformer block: OpenAI module name -> transformers module name (each with a weight and a bias).
BLOCK_MODULES = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def _convert_blocks(state_dict, source, target, converted):
    for i in _blocks(state_dict, source):
        old, new = f"{source}{i}.", f"{target}{i}."
        for kind in ("weight", "bias"):
            # OpenAI fuses the query, key and value projections into one in_proj matrix, in that order.
            fused = state_dict[f"{old}attn.in_proj_{kind}"].chunk(3)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), fused):
                converted[f"{new}self_attn.{name}.{kind}"] = part
            for old_name, new_name in BLOCK_MODULES.items():
                converted[f"{new}{new_name}.{kind}"] = state_dict[f"{old}{old_name}.{kind}"]


def transformers_config(state_dict):
    """The ``CLIPConfig`` of an OpenAI CLIP (ViT) state dict, read off its shapes as ``clip.model.build_model`` does."""
    if "visual.proj" not in state_dict:
        raise UsageError("only CLIP models with a ViT image tower convert to transformers (this one is a ResNet)")
    text_width = state_dict["ln_final.weight"].shape[0]
    vision_width = state_dict["visual.conv1.weight"].shape[0]
    patch_size = state_dict["visual.conv1.weight"].shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return CLIPConfig(
        text_config={
            "vocab_size": state_dict["token_embedding.weight"].shape[0],
            "hidden_size": text_width,
            "intermediate_size": 4 * text_width,
            "num_hidden_layers": len(_blocks(state_dict, "transformer.resblocks.")),
            "num_attention_heads": text_width // 64,
            "max_position_embeddings": state_dict["positional_embedding"].shape[0],
            "hidden_act": "quick_gelu",
            "bos_token_id": 49406,
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": 4 * vision_width,
            "num_hidden_layers": len(_blocks(state_dict, "visual.transformer.resblocks.")),
            "num_attention_heads": vision_width // 64,
            "image_size": patch_size * grid,
            "patch_size": patch_size,
            "hidden_act": "quick_gelu",
        },
        projection_dim=state_dict["text_projection"].shape[1],
        logit_scale_init_value=float(state_dict["logit_scale"]),
    )


def openai_to_transformers(state_dict):
    """A ``CLIPModel`` holding the weights of an OpenAI CLIP (ViT) state dict, loaded strictly."""
    state_dict = {key: value.float() for key, value in state_dict.items()}
    converted = {
        "logit_scale": state_dict["logit_scale"],
        "text_model.embeddings.token_embedding.weight": state_dict["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state_dict["positional_embedding"],
        "text_model.final_layer_norm.weight": state_dict["ln_final.weight"],
        "text_model.final_layer_norm.bias": state_dict["ln_final.bias"],
        "text_projection.weight": state_dict["text_projection"].T,
        "vision_model.embeddings.class_embedding": state_dict["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state_dict["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state_dict["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state_dict["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state_dict["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state_dict["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state_dict["visual.ln_post.bias"],
        "visual_projection.weight": state_dict["visual.proj"].T,
    }
    _convert_blocks(state_dict, "transformer.resblocks.", "text_model.encoder.layers.", converted)
    _convert_blocks(state_dict, "visual.transformer.resblocks.", "vision_model.encoder.layers.", converted)
    model = CLIPModel(transformers_config(state_dict))
    model.load_state_dict({key: value.contiguous() for key, value in converted.items()}, strict=True)
    return model.eval()


def clip_bpe_tokenizer(context_length):
    """CLIP's own BPE vocabulary (shipped in the ``clip`` package) as a transformers ``CLIPTokenizer``."""
    bpe_path = os.path.join(os.path.dirname(clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    reference = clip.simple_tokenizer.SimpleTokenizer(bpe_path)
    with gzip.open(bpe_path) as f:
        merges = f.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]  # the merges SimpleTokenizer uses
    return CLIPTokenizer(
        vocab=reference.encoder, merges=[tuple(merge.split()) for merge in merges], model_max_length=context_length
    )


def save_as_transformers(state_dict, directory):
    """Writes an OpenAI CLIP (ViT) state dict as a transformers CLIP directory (model, tokenizer, image processor)."""
    model = openai_to_transformers(state_dict)
    config = model.config
    tokenizer = clip_bpe_tokenizer(config.text_config.max_position_embeddings)
    resolution = config.vision_config.image_size
    processor = CLIPImageProcessor(
        size={"shortest_edge": resolution},
        crop_size={"height": resolution, "width": resolution},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model
