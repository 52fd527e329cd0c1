"""Tiny models built from configs and saved in the real on-disk formats, for loading through the real code paths."""

import os

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
)

from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapConfig, ClipCapModel
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip

SENTENCES = [
    "a red circle on a dark background.",
    "digital art selected for the #",
    "a large cyan diamond left of a small pink square.",
    "two dogs playing in the water near the beach.",
    "an illustration of a green triangle.",
]
EOS = "<|endoftext|>"


def tiny_clip(seed=0, embed_dim=32, resolution=32):
    """A randomly initialised OpenAI-CLIP ViT small enough for a unit test."""
    torch.manual_seed(seed)
    model = clip.model.CLIP(
        embed_dim=embed_dim,
        image_resolution=resolution,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=16,
        context_length=16,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    )
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)  # exp = 100, as in the released models
    return model.eval()


def save_openai_clip(path, **kwargs):
    """An OpenAI-CLIP state dict file, as ``clip.model.build_model`` reads it; returns the model."""
    model = tiny_clip(**kwargs)
    torch.save(model.state_dict(), path)
    return model


def gpt2_tokenizer():
    """A byte-level BPE tokenizer with GPT-2's conventions (one <|endoftext|> token), trained on a few sentences."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES * 10, vocab_size=300, min_frequency=1, special_tokens=[EOS])
    return GPT2TokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def tiny_gpt2(vocab_size, seed=0, n_positions=64):
    """A randomly initialised GPT-2 architecture (2 layers, width 32)."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def save_language_model(directory):
    """A transformers directory with a GPT-2 config and tokenizer, as ``--language_model`` reads it."""
    tokenizer = gpt2_tokenizer()
    model = tiny_gpt2(len(tokenizer))
    model.config.bos_token_id = model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def released_clipcap_state(mapping_type, language_model_directory, prefix_size=32, prefix_length=3, seed=0):
    """A ClipCap state dict in the released layout: the model's keys plus the legacy GPT-2 buffers."""
    from transformers import AutoConfig

    config = ClipCapConfig(prefix_length=prefix_length, prefix_size=prefix_size, mapping_type=mapping_type,
                           clip_length=2, num_layers=2)  # fmt: skip
    torch.manual_seed(seed)
    gpt = GPT2LMHeadModel(AutoConfig.from_pretrained(language_model_directory))
    model = ClipCapModel(config, gpt)
    state = dict(model.state_dict())
    positions = gpt.config.n_positions
    for i in range(gpt.config.n_layer):
        state[f"gpt.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(positions, positions, dtype=torch.uint8))[
            None, None
        ]
        state[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


def save_blip(directory, image_size=32, seed=0):
    """A transformers BLIP captioning directory (model + processor with a small BERT vocabulary)."""
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] a picture of red green blue circle square dog art . the".split()
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)})
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, bos_token_id=words.index("[DEC]"), sep_token_id=words.index("[SEP]"),
                         eos_token_id=words.index("[SEP]"), pad_token_id=0),
        vision_config=dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=image_size, patch_size=16),
    )  # fmt: skip
    model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}), tokenizer=tokenizer
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model


def model_files(root):
    """All the tiny files a test needs, written under ``root``: returns their paths."""
    paths = {
        "clip": os.path.join(root, "clip.pt"),
        "language_model": os.path.join(root, "gpt2"),
        "clipcap_mlp": os.path.join(root, "clipcap_mlp.pt"),
        "clipcap_transformer": os.path.join(root, "clipcap_transformer.pt"),
        "blip": os.path.join(root, "blip"),
    }
    save_openai_clip(paths["clip"])
    save_language_model(paths["language_model"])
    for kind in ("mlp", "transformer"):
        torch.save(released_clipcap_state(kind, paths["language_model"]), paths[f"clipcap_{kind}"])
    save_blip(paths["blip"])
    return paths


def options(params):
    """Options as a run resolves them (command line, game file, then the released models' defaults)."""
    return get_opts(params).with_model_defaults()


def clipcap_opts(files, kind="mlp", *extra):
    """A ClipCap run's options over ``model_files``' files (``kind``: its released mapper, mlp or transformer)."""
    return options(["--captioner", "clipcap", "--clipcap_checkpoint", files[f"clipcap_{kind}"],
                     "--language_model", files["language_model"], "--captioner_clip_model", files["clip"],
                     "--clip_model", files["clip"], "--max_len", "6", *extra])  # fmt: skip


def blip_opts(files, *extra):
    """A BLIP run's options over ``model_files``' files."""
    return options(["--captioner", "blip", "--blip_model", files["blip"], "--clip_model", files["clip"],
                     "--max_len", "6", *extra])  # fmt: skip


# open_clip and SigLIP retrievers (tests/retrievers/test_retriever_backends.py)

TINY_OPEN_CLIP = "DiscriTune-Tiny-ViT"  # no "siglip" in the name: open_clip would pick its SigLIP tokenizer
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
SIGLIP_WORDS = ["<pad>", "</s>", "<unk>"] + sorted({word.strip(".#") for text in SENTENCES for word in text.split()})


def register_tiny_open_clip(directory):
    """Writes the tiny open_clip architecture as a model config JSON and registers it by name; returns the name."""
    import json

    import open_clip

    path = os.path.join(directory, f"{TINY_OPEN_CLIP}.json")
    with open(path, "w") as f:
        json.dump(TINY_OPEN_CLIP_CONFIG, f)
    open_clip.add_model_config(path)
    return TINY_OPEN_CLIP


def tiny_open_clip(name=TINY_OPEN_CLIP, seed=0):
    """A randomly initialised open_clip model of a registered config, logit scale 100 as the released ones."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)
    return model.eval()


def save_open_clip(path, name=TINY_OPEN_CLIP, seed=0):
    """An open_clip checkpoint file (a state dict, as ``--clip_pretrained FILE`` reads it); returns the model."""
    model = tiny_open_clip(name, seed)
    torch.save(model.state_dict(), path)
    return model


def save_open_clip_directory(directory, seed=0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """An open_clip ``local-dir:`` directory: open_clip_config.json (model and preprocessing) plus the weights."""
    import json

    os.makedirs(directory, exist_ok=True)
    config = {"model_cfg": TINY_OPEN_CLIP_CONFIG,
              "preprocess_cfg": {"mean": list(mean), "std": list(std), "interpolation": "bilinear",
                                 "resize_mode": "squash"}}  # fmt: skip
    with open(os.path.join(directory, "open_clip_config.json"), "w") as f:
        json.dump(config, f)
    torch.manual_seed(seed)
    import open_clip

    model = open_clip.create_model(f"local-dir:{directory}")  # no weights yet: random, from the config
    torch.save(model.state_dict(), os.path.join(directory, "open_clip_pytorch_model.bin"))
    return model.eval()


def siglip_tokenizer(max_length=64):
    """A word-level tokenizer with SigLIP's conventions: lowercased, '</s>' appended, and '</s>' as padding."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(SIGLIP_WORDS)}
    model = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    model.normalizer = normalizers.Lowercase()
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    model.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token="</s>", pad_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)  # fmt: skip


def save_siglip(directory, image_size=32, seed=0, logit_bias=-10.0):
    """A transformers SigLIP directory (SiglipModel, a SigLIP-style tokenizer, SiglipImageProcessor)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tokenizer = siglip_tokenizer()
    config = SiglipConfig(
        text_config=dict(vocab_size=len(SIGLIP_WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=1, bos_token_id=1,
                         eos_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.3026)  # log(10), SigLIP's initial scale
        model.logit_bias.fill_(logit_bias)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return model
