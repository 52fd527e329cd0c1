"""The "captioner" argument group: which captioner, its files, and how it decodes and what of it trains.

``evaluate`` lends a run's saved values of this group to the run's files (``evaluation/models.py``), so every
option that rebuilds a captioner belongs here.
"""

import argparse

from ..captioners import CAPTIONERS
from ..choices import BLIP_PROMPT, CLIPCAP_MAPPING_TYPES, DECODERS


def add_captioner_options(parser):
    group = parser.add_argument_group("captioner")
    group.add_argument("--captioner", choices=sorted(CAPTIONERS), default="clipcap", help="captioner to finetune")
    group.add_argument(
        "--clipcap_checkpoint",
        default=None,
        help="ClipCap weights: a released .pt file (coco_weights.pt, conceptual_weights.pt) or one this tool "
        "wrote (default: the synthetic world's own captioner; required otherwise)",
    )
    group.add_argument(
        "--language_model",
        default=None,
        help="GPT-2 config and tokenizer: a hub id or local directory (default: gpt2, or the synthetic world's)",
    )
    group.add_argument(
        "--captioner_clip_model",
        default=None,
        help="ClipCap's frozen image encoder: a CLIP name or .pt path (default: ViT-B/32, or the synthetic world's)",
    )
    group.add_argument(
        "--mapping_type",
        choices=("auto",) + CLIPCAP_MAPPING_TYPES,
        default="auto",
        help="ClipCap mapper; auto: the kind the checkpoint holds",
    )
    group.add_argument(
        "--prefix_length", type=int, default=None, help="ClipCap prefix length (default: read off the checkpoint)"
    )
    group.add_argument(
        "--clip_length",
        type=int,
        default=None,
        help="transformer mapper: positions the CLIP feature is unfolded into (default: read off the checkpoint)",
    )
    group.add_argument(
        "--normalize_prefix",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise CLIP features before the mapper (default: on for transformer mappers, off for MLP "
        "mappers, as the released checkpoints were trained)",
    )
    group.add_argument(
        "--blip_model",
        default="Salesforce/blip-image-captioning-base",
        help="BLIP captioner: a transformers hub id or local directory (BlipForConditionalGeneration + processor)",
    )
    group.add_argument("--blip_prompt", default=BLIP_PROMPT, help="text BLIP's captions continue (LAVIS's)")
    group.add_argument(
        "--blip_train_vision",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="finetune BLIP's vision encoder too (off: frozen)",
    )
    add_hf_options(group)
    group.add_argument(
        "--num_beams", type=int, default=5, help="beam size for validation and test captions (and --rollouts beam)"
    )
    group.add_argument(
        "--decoder",
        "--decoding",  # its name before 0.2, as older game files and commands give it
        choices=DECODERS,
        default="auto",
        help="what decodes captions (rollouts, greedy captions, beam search): static (a loop over a static KV "
        "cache, no per-token host sync on a GPU except in beam search; generate's tokens under the same random "
        "stream, and its beams), compiled (that loop's per-token step under torch.compile, on CUDA as a CUDA "
        "graph; its first call compiles; tokens equal generate's up to float rounding), generate (transformers' "
        "generate); auto: static where the model allows it (ClipCap's GPT-2), generate otherwise",
    )
    group.add_argument(
        "--stop_at_any_period",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="end a caption at the first token whose string contains '.' (GPT-2: 'Ġ.', '...', '.\"', ...), in "
        "training rollouts, their log-probabilities and evaluation's beams alike, as the authors' "
        "StopTokenLogitsProcessor does (on in the paper's ClipCap game files); off: ClipCap stops at the '.' "
        "token or end of text, BLIP at [SEP] (their own decoding rules)",
    )


def add_hf_options(group):
    """``--captioner hf``: any transformers image-to-text model, and what of it trains."""
    group.add_argument(
        "--hf_model",
        default=None,
        help="--captioner hf: a transformers hub id or local directory that AutoModelForImageTextToText and "
        "AutoProcessor load (BLIP-2, GIT, Florence-2, PaliGemma, Idefics3, SmolVLM, Qwen2-VL, a "
        "VisionEncoderDecoderModel such as a ViT-GPT-2), or a PEFT adapter directory this tool wrote",
    )
    group.add_argument(
        "--hf_prompt",
        default="",
        help="text the captions continue, given to the processor with the image (e.g. 'caption en' for PaliGemma, "
        "'<CAPTION>' for Florence-2); conditioning, never scored",
    )
    group.add_argument(
        "--hf_instruction",
        default=None,
        help="for a processor with a chat template: the user turn's instruction after the image (default, when "
        "--hf_prompt is empty: 'Describe the image.'); the template's generation prompt follows it",
    )
    group.add_argument(
        "--hf_image_size",
        type=int,
        default=None,
        help="resize every image to this square size before the processor (default: only for processors whose "
        "outputs depend on the image's size, such as Qwen2-VL's and Idefics3's, to 224)",
    )
    group.add_argument(
        "--hf_train_vision",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="finetune the vision tower, its projector and Q-former too (off: only the language model trains)",
    )
    group.add_argument(
        "--lora_rank",
        type=int,
        default=0,
        help="train PEFT LoRA adapters of this rank on the language model's linear layers instead of its weights "
        "(0: no LoRA); checkpoints and the saved captioner hold the adapters only",
    )
    group.add_argument("--lora_alpha", type=float, default=None, help="LoRA scaling alpha (default: 2 x rank)")
    group.add_argument(
        "--lora_targets",
        nargs="+",
        default=None,
        help="module names LoRA adapts, e.g. q_proj v_proj (default: every linear layer of the language model but "
        "its output head)",
    )
    group.add_argument(
        "--merge_lora",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="save the finetuned captioner with its adapters merged into the weights (off: the adapters alone)",
    )
    group.add_argument(
        "--gradient_checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="recompute the captioner's activations in the backward pass (transformers' gradient checkpointing)",
    )
