"""Tiny randomly initialised transformers captioners, one builder per family, saved as loadable directories.

Every builder writes a model (``save_pretrained``) and its real processor (image processor + a small tokenizer
trained here on a few sentences) into ``directory``, so that ``AutoProcessor.from_pretrained(directory)`` and
``AutoModelForImageTextToText.from_pretrained(directory)`` load them offline.  The token ids in the configs
(image token, bos / eos / pad, decoder start) are read from the tokenizer, so the two always agree.

Each returns a dict with at least ``directory``, ``prompt_or_instruction`` (the text for the processor; for the
chat families, the user instruction to put in a chat message), ``kind`` ("encoder_decoder" or "decoder_only"),
``chat`` (whether the text must first go through ``processor.apply_chat_template``), ``model_class``,
``eos_token_ids``, ``pad_token_id`` and ``image_token_id`` (``decoder_start_token_id`` for encoder-decoders).

``hf_opts`` is the run config of ``--captioner hf`` over such a directory, ``pixels_of`` a few images as its inputs.
"""

import json

import torch
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    BartTokenizer,
    BertTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    CLIPImageProcessor,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    GemmaTokenizer,
    GitConfig,
    GitForCausalLM,
    GitProcessor,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    SiglipImageProcessor,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from egg.zoo.discriminative_captioner.options.parse import config_of

SENTENCES = [
    "a red circle on a dark background.",
    "a photo of a dog playing in the water near the beach.",
    "a large cyan diamond left of a small pink square.",
    "an illustration of a green triangle.",
    "Describe the image.\nWhat does the image describe?",
    "user\nassistant\nUser: Assistant: caption en\n",
]

QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IDEFICS3_CHAT_TEMPLATE = (  # the released Idefics3 template
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

INSTRUCTION = "Describe the image."


def byte_level_bpe(special_tokens, merges=120):
    """A byte-level BPE (GPT-2 / RoBERTa / Qwen2 style) trained on SENTENCES: returns (vocab, merges).

    The special tokens come first, in the order given, so their ids are 0, 1, 2, ...
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=len(special_tokens) + 256 + merges,
        min_frequency=1,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES * 10, trainer=trainer)
    return _vocab_and_merges(bpe)


def sentencepiece_like_bpe(special_tokens, merges=120):
    """A BPE over "▁"-joined text (Gemma / Llama-2 style, no byte-level alphabet): returns (vocab, merges)."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    alphabet = sorted(set("".join(SENTENCES).replace(" ", "▁")) | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    trainer = trainers.BpeTrainer(
        vocab_size=len(special_tokens) + len(alphabet) + merges,
        min_frequency=1,
        special_tokens=list(special_tokens),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES * 10, trainer=trainer)
    return _vocab_and_merges(bpe)


def _vocab_and_merges(bpe):
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _set_generation_ids(model, eos, pad, bos=None, decoder_start=None, suppress=()):
    """Write the special ids into the model config (top level and text config) and the generation config.

    ``suppress``: placeholder ids (image tokens...) that ``generate`` must never sample; a random model otherwise
    samples them now and then, and a sequence with an extra image token cannot be fed back to the model.
    """
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    eos_value = eos if len(eos) > 1 else eos[0]
    configs = [model.config]
    text_config = getattr(model.config, "text_config", None)
    if text_config is not None:
        configs.append(text_config)
    for config in configs:
        config.eos_token_id = eos_value
        config.pad_token_id = pad
        if bos is not None:
            config.bos_token_id = bos
        if decoder_start is not None:
            config.decoder_start_token_id = decoder_start
    gen = model.generation_config
    gen.eos_token_id = eos_value
    gen.pad_token_id = pad
    if bos is not None:
        gen.bos_token_id = bos
    if decoder_start is not None:
        gen.decoder_start_token_id = decoder_start
    if suppress:
        gen.suppress_tokens = sorted(set(suppress))
    return eos


def _save(model, processor, directory):
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


# --------------------------------------------------------------------------------------------------------- BLIP-2


def save_blip2(directory, seed=0, image_size=32, num_query_tokens=4):
    """BLIP-2 with an OPT language model (Blip2ForConditionalGeneration + Blip2Processor).

    The processor puts ``num_query_tokens`` ``<image>`` tokens before the OPT prompt (which starts with OPT's
    ``</s>`` bos); the model scatters the Q-Former outputs into them.
    """
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]  # OPT's ids 0-3, as released
    vocab, merges = byte_level_bpe(specials)
    tokenizer = GPT2Tokenizer(
        vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        add_bos_token=True,
    )  # fmt: skip  # no image_token attribute: Blip2Processor then adds "<image>" as an AddedToken (in vocab: id 4)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=len(tokenizer)),
        text_config=dict(model_type="opt", vocab_size=len(tokenizer), hidden_size=32, word_embed_proj_dim=32,
                         ffn_dim=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128,
                         pad_token_id=pad, bos_token_id=eos, eos_token_id=eos),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    eos_ids = _set_generation_ids(model, eos=eos, pad=pad, bos=eos, suppress=[image_token_id])
    _save(model, processor, directory)
    return {
        "directory": str(directory),
        "prompt_or_instruction": "a picture of",
        "kind": "decoder_only",
        "chat": False,
        "model_class": "Blip2ForConditionalGeneration",
        "eos_token_ids": eos_ids,
        "pad_token_id": pad,
        "image_token_id": image_token_id,
        "num_image_tokens": num_query_tokens,
    }


# ----------------------------------------------------------------------------------------------------- Florence-2

FLORENCE_TASKS = ["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OCR>", "<OD>"]


def save_florence2(directory, seed=0, image_size=64):
    """Florence-2 (DaViT vision tower + BART encoder-decoder) with Florence2Processor over a BART tokenizer.

    The processor turns the task token (``<CAPTION>``) into its question and prepends the image tokens; the
    vision tower downsamples by 32, so a ``image_size`` image gives (image_size / 32) ** 2 + 1 image tokens.
    """
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"] + FLORENCE_TASKS
    vocab, merges = byte_level_bpe(specials)
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, image_token="<image>", extra_special_tokens=FLORENCE_TASKS)
    num_image_tokens = (image_size // 32) ** 2 + 1
    image_processor = CLIPImageProcessor(
        size={"height": image_size, "width": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )  # fmt: skip
    image_processor.image_seq_length = num_image_tokens
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    config = Florence2Config(
        vision_config=dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 32], num_heads=[1, 1, 1, 2],
                           num_groups=[1, 1, 1, 2], window_size=2, drop_path_rate=0.0, projection_dim=32,
                           max_position_embeddings=max(2, image_size // 32), max_temporal_embeddings=4),
        text_config=dict(model_type="bart", vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_position_embeddings=128, bos_token_id=bos, pad_token_id=pad, eos_token_id=eos,
                         decoder_start_token_id=eos, forced_eos_token_id=None),
        image_token_id=tokenizer.image_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    eos_ids = _set_generation_ids(
        model, eos=eos, pad=pad, bos=bos, decoder_start=eos, suppress=[tokenizer.image_token_id]
    )
    _save(model, processor, directory)
    return {
        "directory": str(directory),
        "prompt_or_instruction": "<CAPTION>",
        "kind": "encoder_decoder",
        "chat": False,
        "model_class": "Florence2ForConditionalGeneration",
        "eos_token_ids": eos_ids,
        "pad_token_id": pad,
        "image_token_id": tokenizer.image_token_id,
        "decoder_start_token_id": eos,
        "num_image_tokens": num_image_tokens,
    }


# ------------------------------------------------------------------------------------------------------ PaliGemma


def save_paligemma(directory, seed=0, image_size=32, patch_size=8):
    """PaliGemma (SigLIP vision tower + Gemma) with PaliGemmaProcessor over a Gemma-style tokenizer.

    The processor adds PaliGemma's 1024 ``<locNNNN>`` and 128 ``<segNNN>`` tokens to the tokenizer, so the
    vocabulary is ~1.4k tokens; the prompt is ``<image>`` + task, the processor adds ``<bos>`` and a newline.
    """
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>"]  # Gemma's ids 0-3, as released
    vocab, merges = sentencepiece_like_bpe(specials)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, image_token="<image>")
    num_image_tokens = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = num_image_tokens
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds <loc>/<seg>
    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=image_size, patch_size=patch_size),
        text_config=dict(model_type="gemma", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=256, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad),
        image_token_index=image_token_id,
        vocab_size=len(tokenizer),
        projection_dim=32,
        hidden_size=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    eos_ids = _set_generation_ids(model, eos=eos, pad=pad, bos=bos, suppress=[image_token_id])
    _save(model, processor, directory)
    return {
        "directory": str(directory),
        "prompt_or_instruction": "<image>caption en",
        "kind": "decoder_only",
        "chat": False,
        "model_class": "PaliGemmaForConditionalGeneration",
        "eos_token_ids": eos_ids,
        "pad_token_id": pad,
        "image_token_id": image_token_id,
        "num_image_tokens": num_image_tokens,
    }


# ------------------------------------------------------------------------------------------------------- Idefics3

IDEFICS3_SPECIALS = (
    ["<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
     "<global-img>"] + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
)  # fmt: skip


def save_idefics3(directory, seed=0, image_size=32, patch_size=8, scale_factor=2):
    """Idefics3 (SigLIP-like vision tower + pixel shuffle + Llama) with Idefics3Processor and its chat template.

    Image splitting is off, so each image is one ``image_size`` frame: ``<fake_token_around_image><global-img>``
    + ``(image_size / patch_size / scale_factor) ** 2`` ``<image>`` tokens + ``<fake_token_around_image>``.
    Generation stops at ``<end_of_utterance>`` (or ``<|end_of_text|>``).
    """
    vocab, merges = byte_level_bpe(IDEFICS3_SPECIALS)
    tokenizer = GPT2Tokenizer(
        vocab=vocab, merges=merges, bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>",
        unk_token="<|end_of_text|>", pad_token="<pad>", extra_special_tokens=IDEFICS3_SPECIALS[3:],
    )  # fmt: skip
    image_seq_len = (image_size // patch_size // scale_factor) ** 2
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )  # fmt: skip
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    eos = [tokenizer.convert_tokens_to_ids("<end_of_utterance>"), tokenizer.convert_tokens_to_ids("<|end_of_text|>")]
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=patch_size),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad),
        scale_factor=scale_factor,
        image_token_id=image_token_id,
        pad_token_id=pad,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    placeholders = tokenizer.convert_tokens_to_ids(IDEFICS3_SPECIALS[3:5] + IDEFICS3_SPECIALS[6:])
    eos_ids = _set_generation_ids(model, eos=eos, pad=pad, bos=bos, suppress=placeholders)
    _save(model, processor, directory)
    return {
        "directory": str(directory),
        "prompt_or_instruction": INSTRUCTION,
        "kind": "decoder_only",
        "chat": True,
        "model_class": "Idefics3ForConditionalGeneration",
        "eos_token_ids": eos_ids,
        "pad_token_id": pad,
        "image_token_id": image_token_id,
        "num_image_tokens": image_seq_len,
    }


# ------------------------------------------------------------------------------------------------------- Qwen2-VL

QWEN2_VL_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]  # fmt: skip


def save_qwen2_vl(directory, seed=0, patch_size=8, merge_size=2, max_pixels=64 * 64, min_pixels=32 * 32):
    """Qwen2-VL (patch-merging ViT + Qwen2 with M-RoPE) with Qwen2VLProcessor and a Qwen-style chat template.

    The image processor resizes each image to multiples of ``patch_size * merge_size`` within
    [min_pixels, max_pixels] (so the number of ``<|image_pad|>`` tokens depends on the image's size and aspect);
    a 64x64 image gives an 8x8 patch grid, i.e. 16 image tokens.  Generation stops at ``<|im_end|>``.
    """
    vocab, merges = byte_level_bpe(QWEN2_VL_SPECIALS)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens=QWEN2_VL_SPECIALS[1:], image_token="<|image_pad|>", video_token="<|video_pad|>",
        vision_bos_token="<|vision_start|>", vision_eos_token="<|vision_end|>",
    )  # fmt: skip
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    kwargs = dict(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2, size=size)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**kwargs), video_processor=Qwen2VLVideoProcessor(**kwargs),
        tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )  # fmt: skip
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN2_VL_SPECIALS}
    pad = ids["<|endoftext|>"]
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=pad, eos_token_id=eos, pad_token_id=pad),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=patch_size,
                           spatial_merge_size=merge_size, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    placeholders = [ids[t] for t in ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]]
    eos_ids = _set_generation_ids(model, eos=eos, pad=pad, bos=pad, suppress=placeholders)
    _save(model, processor, directory)
    return {
        "directory": str(directory),
        "prompt_or_instruction": INSTRUCTION,
        "kind": "decoder_only",
        "chat": True,
        "model_class": "Qwen2VLForConditionalGeneration",
        "eos_token_ids": eos_ids,
        "pad_token_id": pad,
        "image_token_id": ids["<|image_pad|>"],
        "num_image_tokens": None,  # depends on the image's size
    }


# ------------------------------------------------------------------------------------------------------------ GIT

GIT_WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] a an the of in on near left small large picture photo image red green blue "
    "cyan pink dark circle square diamond triangle dog dogs water beach background art illustration playing two "
    "what does describe is shown . , ? ##s"
).split()


def save_git(directory, seed=0, image_size=32):
    """GIT (CLIP-like vision tower whose patch features are prepended to a BERT-vocabulary causal decoder).

    The image features are not placeholders in ``input_ids``: captioning is ``generate(pixel_values=...)``, which
    starts from ``[CLS]`` (bos) and stops at ``[SEP]``; the returned sequences start with ``[CLS]``.  A text prompt
    is not used (the BERT tokenizer would end it with ``[SEP]``, the eos), hence ``prompt_or_instruction`` None.
    """
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(GIT_WORDS)})
    image_processor = CLIPImageProcessor(
        size={"height": image_size, "width": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
    )  # fmt: skip
    processor = GitProcessor(image_processor=image_processor, tokenizer=tokenizer)
    bos, eos, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    config = GitConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GitForCausalLM(config).eval()
    eos_ids = _set_generation_ids(model, eos=eos, pad=pad, bos=bos, suppress=[pad, tokenizer.unk_token_id])
    _save(model, processor, directory)
    return {
        "directory": str(directory),
        "prompt_or_instruction": None,
        "kind": "decoder_only",
        "chat": False,
        "model_class": "GitForCausalLM",
        "eos_token_ids": eos_ids,
        "pad_token_id": pad,
        "bos_token_id": bos,
        "image_token_id": None,
        "num_image_tokens": (image_size // 16) ** 2 + 1,  # prepended inside the model, not in input_ids
    }


# -------------------------------------------------------------------------------------- ViT + GPT-2 encoder-decoder


def save_vit_gpt2(directory, seed=0, image_size=32):
    """A VisionEncoderDecoderModel (ViT encoder + GPT-2 decoder with cross-attention), as vit-gpt2 captioners are.

    There is no joint processor class: the directory holds a ViTImageProcessor and a GPT2Tokenizer, and
    ``AutoProcessor.from_pretrained`` returns the tokenizer alone: load them with AutoImageProcessor and
    AutoTokenizer.
    Decoding starts from and stops at ``<|endoftext|>`` (also the pad), as in nlpconnect/vit-gpt2-image-captioning.
    """
    eot = "<|endoftext|>"
    vocab, merges = byte_level_bpe([eot])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot)
    image_processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    eos = tokenizer.eos_token_id
    torch.manual_seed(seed)
    encoder = ViTModel(
        ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=16)
    )  # fmt: skip
    decoder = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64, bos_token_id=eos,
                   eos_token_id=eos, pad_token_id=eos, add_cross_attention=True, is_decoder=True)
    )  # fmt: skip
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    model.config.decoder.is_decoder = True
    model.config.decoder.add_cross_attention = True
    eos_ids = _set_generation_ids(model, eos=eos, pad=eos, bos=eos, decoder_start=eos)
    model.config.decoder.eos_token_id = model.config.decoder.pad_token_id = eos
    model.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {
        "directory": str(directory),
        "prompt_or_instruction": None,
        "kind": "encoder_decoder",
        "chat": False,
        "model_class": "VisionEncoderDecoderModel",
        "eos_token_ids": eos_ids,
        "pad_token_id": eos,
        "image_token_id": None,
        "decoder_start_token_id": eos,
        "num_image_tokens": None,
    }


BUILDERS = {
    "blip2": save_blip2,
    "florence2": save_florence2,
    "paligemma": save_paligemma,
    "idefics3": save_idefics3,
    "qwen2_vl": save_qwen2_vl,
    "git": save_git,
    "vit_gpt2": save_vit_gpt2,
}


# --- loading them through ``--captioner hf`` -----------------------------------------------------------------------


def hf_opts(info, **overrides):
    """The run config of ``--captioner hf`` over the directory a builder wrote (``info``, what it returned)."""
    text = info.get("prompt_or_instruction") or ""
    values = dict(hf_model=info["directory"], hf_prompt="" if info.get("chat") else text,
                  hf_instruction=text if info.get("chat") else None, max_len=6, hf_train_vision=False,
                  hf_image_size=None, lora_rank=0, lora_alpha=None, lora_targets=None, merge_lora=False,
                  gradient_checkpointing=False)  # fmt: skip
    values.update(overrides)
    return config_of().replace(captioner="hf", **values)


def images(n=3):
    """Images of different sizes and colours."""
    return [Image.new("RGB", (40 + 9 * i, 36 + 5 * i), (60 * i % 256, 120, 200 - 40 * i)) for i in range(n)]


def pixels_of(captioner, n=3):
    return torch.stack([captioner.image_transform(image) for image in images(n)])
