"""The plugin's argument groups, one per concern, and what each command uses of them.

Every command (train, evaluate, caption) builds the same groups, so that a game file's values mean the same
everywhere; ``UNUSED`` lists the options a command has no use for (left out of its ``--help``, and reported as
ignored when given on its command line), ``COMMAND_HELP`` the options whose meaning differs for a command.
Importable without torch: the choices come from the registries and ``choices.py``.
"""

import argparse

from ..choices import BASELINES, KL_ESTIMATORS, KL_REFERENCES, LOG_PROB_NORMALIZATIONS, PRECISIONS, REWARDS, ROLLOUTS
from ..data import DATASETS
from ..retrievers import CLIP_BACKENDS, RETRIEVERS
from .captioner import add_captioner_options
from .running import add_output_options, add_run_options, add_step_options, add_tracking_options

COMMANDS = ("train", "evaluate", "caption")
GAME_GROUP = "game (REINFORCE)"
RETRIEVER_MIXES = ("mean", "alternate")
RETRIEVER_GROUP = "retriever"

# What only training uses (EGG's training options, the sampler's, the rollouts'); the game group is training's too.
TRAINING_ONLY = {
    "random_seed", "checkpoint_dir", "preemptable", "checkpoint_freq", "validation_freq", "n_epochs", "optimizer",
    "lr", "update_freq", "tensorboard", "tensorboard_dir", "distributed_port", "fp16", "greedy_rollouts",
    "checkpoint_every", "hard_distractors", "blip_train_vision", "validation_images", "allow_world_size_change",
    "retriever_mix", "micro_batch_size", "rollout_batch_size", "lr_scheduler", "warmup_steps", "max_grad_norm",
    "allow_option_change", "report_to", "log_every", "log_captions_every", "caption_table_images", "run_name",
    "tracker_project", "push_to_hub", "hub_private",
}  # fmt: skip
# What of a captioner only training uses: evaluate and caption rebuild a run's adapters from its own opts.json.
TRAINING_CAPTIONER = {"hf_train_vision", "lora_rank", "lora_alpha", "lora_targets", "merge_lora",
                      "gradient_checkpointing"}  # fmt: skip
HF_DATA_OPTIONS = {"hf_dataset", "image_column", "caption_column", "id_column", "hf_splits"}  # --dataset hf's own
UNUSED = {
    "train": set(),
    # evaluate captions in batches of its own and draws no training batch
    "evaluate": TRAINING_ONLY | TRAINING_CAPTIONER | {"batch_size"},
    # caption reads image files and needs neither a data split nor a retriever
    "caption": TRAINING_ONLY | TRAINING_CAPTIONER | {"load_from_checkpoint", "data_root", "feature_cache_dir",
                                                     "feature_batch_size", "eval_candidates", "eval_seed",
                                                     "num_workers", "rebuild"} | HF_DATA_OPTIONS,
}  # fmt: skip
# Each captioner's own options: given on the command line with another captioner, they are refused.
CAPTIONER_OPTIONS = {
    "hf": {"hf_model", "hf_prompt", "hf_instruction", "hf_image_size", "hf_train_vision", "lora_rank", "lora_alpha",
           "lora_targets", "merge_lora", "gradient_checkpointing"},
    "blip": {"blip_model", "blip_prompt", "blip_train_vision"},
    "clipcap": {"clipcap_checkpoint", "language_model", "captioner_clip_model", "mapping_type", "prefix_length",
                "clip_length", "normalize_prefix"},
}  # fmt: skip
UNUSED_GROUPS = {"train": (), "evaluate": (GAME_GROUP,), "caption": (GAME_GROUP, RETRIEVER_GROUP)}
COMMAND_HELP = {
    "evaluate": {
        "dataset": "data set whose models are the defaults of --models pretrained, and the default of --datasets",
        "load_from_checkpoint": "evaluate this checkpoint of a run (RUN/final.tar), as --models RUN/final.tar does",
        "num_beams": "beam size of the captions",
        "num_workers": "DataLoader workers decoding images while a feature cache is built",
        "overwrite": "replace the results of an earlier evaluation in --output_dir (its files only)",
    },
    "caption": {
        "dataset": "data set whose models --model pretrained means (the synthetic world brings its own)",
        "game": "experiment configuration whose models --model pretrained means (a name in games/ or a JSON file)",
        "cache_dir": "where the synthetic world is cached (default: the user cache directory)",
        "batch_size": "images captioned at a time",
        "num_beams": "beam size of the captions",
        "overwrite": "replace an existing --output file",
    },
}


def add_plugin_groups(parser):
    """Every group of this plugin (EGG's common options are added by ``core.init``)."""
    add_data_options(parser)
    add_captioner_options(parser)
    add_retriever_options(parser)
    add_game_options(parser)
    add_step_options(parser)
    add_run_options(parser)
    add_tracking_options(parser)
    add_output_options(parser)


def add_data_options(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic", help="data set to train on")
    group.add_argument(
        "--game",
        default=None,
        help="experiment configuration: a name in games/ (e.g. 'synthetic') or a JSON file of option values; "
        "default: the --dataset's own (games/<dataset>.json). Command-line options override it.",
    )
    group.add_argument("--cache_dir", default=None, help="cache for built data (default: the user cache directory)")
    group.add_argument(
        "--rebuild",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="rebuild cached data (synthetic world, feature caches) from scratch",
    )
    add_data_location_options(group)
    add_hf_dataset_options(group)
    group.add_argument(
        "--synthetic_world", choices=("default", "tiny"), default="default", help="size of the synthetic world"
    )
    group.add_argument(
        "--eval_candidates",
        type=int,
        default=100,
        help="validation and test retrieval: each target among this many candidates (P@1 among 100 in the paper)",
    )
    group.add_argument(
        "--eval_seed", type=int, default=0, help="seed that draws the distractors of validation and test retrieval"
    )
    group.add_argument(
        "--num_workers",
        type=int,
        default=0,
        help="DataLoader workers for training batches and for decoding images (feature cache builds, BLIP's pixels)",
    )


def add_hf_dataset_options(group):
    """``--dataset hf``: a Hugging Face data set, its columns and splits (data/hf_datasets.py, docs/datasets.md)."""
    group.add_argument("--hf_dataset", default=None, metavar="ID_OR_DIR", help="--dataset hf: a hub data set id, or "
                       "a directory saved with save_to_disk or of the data set's parquet files")  # fmt: skip
    group.add_argument("--image_column", default=None, help="--dataset hf: the images, an Image feature or file "
                       "paths (or URLs, read as paths) under --data_root (default: image)")  # fmt: skip
    group.add_argument("--caption_column", default=None, help="--dataset hf: the reference captions, a string or a "
                       "list per row (default: the first of caption, captions, sentences, text)")  # fmt: skip
    group.add_argument("--id_column", default=None, help="--dataset hf: the image ids; rows sharing one are one "
                       "image with all their captions (default: <source split>/<row>)")  # fmt: skip
    group.add_argument("--hf_splits", nargs="+", default=None, metavar="SPLIT=SOURCE", help="--dataset hf: the "
                       "data set's split that is train, validation or test, several joined with + (train=train+"
                       "restval); default: train, validation (or val, valid, dev), test")  # fmt: skip


def add_data_location_options(group):
    """Where real data sets and their frozen-feature caches live, and how training batches are composed."""
    group.add_argument(
        "--data_root",
        default=None,
        help="directory of the --dataset (default: $DISCRITUNE_DATA/<data set directory>, with DISCRITUNE_DATA "
        "defaulting to ~/data: conceptual_captions, coco, flickr30k, nocaps, concadia, imagecode)",
    )
    group.add_argument(
        "--feature_cache_dir",
        default=None,
        help="where frozen image features are cached, per data set, split and encoder (default: "
        "<--cache_dir>/features, e.g. ~/.cache/discriminative_captioner/features)",
    )
    group.add_argument(
        "--feature_batch_size", type=int, default=256, help="images per encoder forward when building a feature cache"
    )
    group.add_argument(
        "--hard_distractors",
        type=int,
        default=0,
        help="every training caption is scored against its target's k nearest neighbours by CLIP image cosine "
        "(faiss over the retriever's cached features) and --batch_size - 1 - k random images of its batch "
        "(paper appendix D.2); 0 = the batch's other images only",
    )
    group.add_argument(
        "--validation_images",
        type=int,
        default=0,
        help="validate on N training images held out of training (drawn with --eval_seed), not on the data set's "
        "validation split; for data sets whose validation split is their test set (conceptual); 0 = the split",
    )


def add_retriever_options(parser):
    group = parser.add_argument_group(RETRIEVER_GROUP)
    group.add_argument("--retriever", choices=RETRIEVERS, default="clip", help="frozen text-to-image retriever")
    group.add_argument(
        "--clip_backend",
        choices=sorted(CLIP_BACKENDS),
        default="openai",
        help="retriever implementation: openai, OpenAI CLIP through the clip package; open_clip, an open_clip "
        "model with the weights of --clip_pretrained; transformers, a CLIP or SigLIP dual encoder (CLIPModel, "
        "SiglipModel). Every retriever is frozen and scored in fp32 with its own tokenizer, text length and "
        "preprocessing; the reward's temperature is the model's own 1/exp(logit_scale), SigLIP's included: its "
        "pairwise sigmoid score cos*exp(logit_scale)+logit_bias enters the softmax over candidates, where the "
        "bias cancels",
    )
    group.add_argument(
        "--clip_model",
        nargs="+",
        default=None,
        help="retriever model; several (train): the captioner is rewarded by each, see --retriever_mix. openai "
        "backend: a name (ViT-B/32, ...) or a local .pt file, ViT-B/32 if unset; "
        "open_clip backend: an open_clip model name (ViT-B-32, ViT-B-16-SigLIP, ...; ViT-B-32 if unset) or "
        "local-dir:DIRECTORY / hf-hub:ORG/REPO; transformers backend: a hub id (openai/clip-vit-base-patch32 if "
        "unset, google/siglip-base-patch16-224, ...) or a local directory, SigLIP captions padded to its 64 "
        "tokens as it was trained; the synthetic world brings its own. A model given as "
        "BACKEND:MODEL[:PRETRAINED] (openai:FILE.pt, transformers:DIR, open_clip:ViT-B-32:TAG) brings its own "
        "backend, so that one run mixes backends; --clip_backend is that of the plain names",
    )
    group.add_argument(
        "--clip_pretrained",
        nargs="+",
        default=None,
        help="open_clip backend only: the weights of --clip_model, a local checkpoint file (works offline) or a "
        "pretrained tag such as laion2b_s34b_b79k (downloaded); required there, one per --clip_model",
    )
    group.add_argument(
        "--retriever_mix",
        choices=RETRIEVER_MIXES,
        default="mean",
        help="with several --clip_model (paper section 6): mean, the reward is the mean of the retrievers' "
        "log-probability rewards; alternate, one retriever per training batch in turn. Each scores with its own "
        "temperature (--reward_temperature sets the first's; the others keep theirs relative to it); P@1 is the "
        "first retriever's, each other's is logged as acc_retriever<i>",
    )
    group.add_argument(
        "--clip_download_root",
        default=None,
        help="where named CLIP models (openai backend) and open_clip tags are looked up and downloaded (default: "
        "~/.cache/clip; open_clip's hub tags: the Hugging Face cache)",
    )
    group.add_argument(
        "--retriever_precision",
        choices=PRECISIONS,
        default="fp32",
        help="precision the retriever computes embeddings in; scores are always fp32",
    )


def add_game_options(parser):
    group = parser.add_argument_group(GAME_GROUP)
    group.add_argument(
        "--reward",
        choices=REWARDS,
        default="logprob",
        help="reward of a caption: logprob, the log-softmax of the target's score among the candidates (the "
        "paper's); accuracy, 1 when the target scores strictly highest (a tie is a miss, as evaluate counts); "
        "cosine, the target's score cosine / T alone (100 x cosine for CLIP, as the authors' SimilarityLoss)",
    )
    group.add_argument(
        "--reward_temperature",
        type=float,
        default=None,
        help="softmax temperature of the match scores, score = cosine / T (default: the retriever's own, "
        "1/exp(logit_scale), 0.01 for OpenAI CLIP)",
    )
    group.add_argument(
        "--baseline",
        choices=BASELINES,
        default="mean",
        help="REINFORCE baseline: running mean of past rewards, none, the reward of the greedy caption, or, with "
        "--rollouts_per_image K > 1, rloo (the mean reward of the image's other K - 1 rollouts) or group (the "
        "mean of its K rollouts; with --standardize_advantage divided by their standard deviation, as GRPO)",
    )
    group.add_argument(
        "--rollouts_per_image",
        type=int,
        default=1,
        help="sampled captions per training image, each scored against the batch's candidates; the image's "
        "condition is computed once for all K",
    )
    group.add_argument("--entropy_coeff", type=float, default=0.0, help="weight of the sender entropy bonus")
    group.add_argument(
        "--standardize_advantage",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="rescale advantages to zero mean and unit variance within each batch (with --baseline group: "
        "divide by each image's group standard deviation); this removes any constant baseline, so it makes the "
        "running-mean baseline irrelevant",
    )
    group.add_argument(
        "--kl_coeff",
        type=float,
        default=0.0,
        help="weight of a KL penalty added to each caption's cost, without gradient (keeps the language fluent; "
        "0 = off)",
    )
    group.add_argument(
        "--kl_in_baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the baseline sees each caption's cost with its KL penalty (this project's choice); off, the KL "
        "penalty is added to the advantage after the baseline, whose running mean then follows the task cost "
        "alone (the authors' code; the paper's game files)",
    )
    group.add_argument(
        "--kl_reference",
        choices=KL_REFERENCES,
        default="captioner",
        help="what the KL penalty compares the policy with: captioner, a frozen copy of the pretrained captioner "
        "(this project's choice), or language_model, the plain pretrained GPT-2 of --language_model fed a "
        "beginning-of-text token and the caption, not the image (the authors' KLRegularizer; ClipCap only)",
    )
    group.add_argument(
        "--kl_estimator",
        choices=KL_ESTIMATORS,
        default="sampled",
        help="sampled: log p(caption) - log p_ref(caption), a sampled estimate of KL(policy || reference), "
        "meaningful only on sampled rollouts (this project's choice); exact: the per-token KL(reference || "
        "policy) over the whole vocabulary, summed over the caption's tokens (the authors' KLRegularizer). "
        "Normalised like the log-probability (--log_prob_normalization)",
    )
    group.add_argument(
        "--log_prob_normalization",
        choices=LOG_PROB_NORMALIZATIONS,
        default="sum",
        help="a caption's log-probability in the REINFORCE term, and its KL: sum over its tokens (the paper's Eq. "
        "1; this project's default) or mean, the sum divided by the caption's length as the authors' code counts "
        "it: with its stop token, and for ClipCap the end-of-text token their decoding forces after a period (the "
        "paper's game files)",
    )
    group.add_argument(
        "--rollouts",
        choices=ROLLOUTS,
        default=None,
        help="how training captions are decoded: sample (default: REINFORCE is unbiased; this project's "
        "choice), greedy (the paper's stated setting and the authors' code; biased), or beam, the top of "
        "--num_beams beams (biased; with --baseline greedy it is the paper's Table 8 'greedy decoding' "
        "baseline: beam captions, the greedy caption's reward as baseline). When given, it wins over "
        "--greedy_rollouts",
    )
    group.add_argument(
        "--greedy_rollouts",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the same as --rollouts greedy (the paper's stated setting; REINFORCE is then biased)",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="the captioner's training precision (autocast; fp16 needs CUDA and is EGG's --fp16, with a "
        "GradScaler); the retriever, the reward and the KL reference stay in fp32",
    )
