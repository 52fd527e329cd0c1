"""Command-line options: one argument group per concern, on top of EGG's common options (``core.init``).

Values come in three layers: the defaults below and EGG's, then a game file (``--game``: one JSON file per
experiment of the paper, by default the chosen data set's), then the command line.  Model options left unset
fall back to the data set's own models (the synthetic world has some) and then to the released models.
"""

import argparse
import importlib.resources
import json
import os

from .captioners import CAPTIONERS
from .captioners.blip import DEFAULT_PROMPT
from .captioners.clipcap import MAPPING_TYPES
from .core import core
from .data import DATASETS
from .errors import UsageError
from .losses import REWARDS
from .precision import PRECISIONS
from .retrievers import CLIP_BACKENDS

# EGG's common options (egg.core.init), which a game file may set as well.
EGG_OPTIONS = {
    "random_seed", "checkpoint_dir", "preemptable", "checkpoint_freq", "validation_freq", "n_epochs",
    "load_from_checkpoint", "no_cuda", "batch_size", "optimizer", "lr", "update_freq", "vocab_size", "max_len",
    "tensorboard", "tensorboard_dir", "distributed_port", "fp16",
}  # fmt: skip

# Model options whose default depends on the data set: the released models unless the data set brings its own.
MODEL_DEFAULTS = {
    "clip_model": {"openai": "ViT-B/32", "transformers": "openai/clip-vit-base-patch32"},
    "captioner_clip_model": "ViT-B/32",
    "clipcap_checkpoint": None,
    "language_model": "gpt2",
}
MODEL_GROUPS = (("clipcap_checkpoint", "language_model", "captioner_clip_model"), ("clip_model",))

BASELINES = ("mean", "none", "greedy")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the full usage is a screenful here)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
        "--rebuild", action="store_true", help="rebuild cached data (synthetic world, feature caches) from scratch"
    )
    add_data_location_options(group)
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
        help="training batches made of groups of an image and its k nearest neighbours by CLIP image cosine "
        "(faiss over the retriever's cached features), the rest random (paper appendix D.2); 0 = random batches",
    )


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
        choices=("auto",) + MAPPING_TYPES,
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
    group.add_argument("--blip_prompt", default=DEFAULT_PROMPT, help="text BLIP's captions continue (LAVIS's)")
    group.add_argument(
        "--blip_train_vision", action="store_true", help="finetune BLIP's vision encoder too (default: frozen)"
    )
    group.add_argument("--num_beams", type=int, default=5, help="beam size for validation and test captions")
    group.add_argument(
        "--greedy_rollouts",
        action="store_true",
        help="roll out greedy captions instead of sampled ones in training (the paper's stated setting; "
        "REINFORCE is then biased)",
    )


def add_retriever_options(parser):
    group = parser.add_argument_group("retriever")
    group.add_argument("--retriever", choices=("clip",), default="clip", help="frozen text-to-image retriever")
    group.add_argument(
        "--clip_backend",
        choices=sorted(CLIP_BACKENDS),
        default="openai",
        help="CLIP implementation: OpenAI's clip package, or transformers' CLIPModel",
    )
    group.add_argument(
        "--clip_model",
        default=None,
        help="retriever CLIP. openai backend: a name (ViT-B/32, ...) or a local .pt file (default: ViT-B/32); "
        "transformers backend: a hub id or local directory (default: openai/clip-vit-base-patch32); the "
        "synthetic world brings its own",
    )
    group.add_argument(
        "--clip_download_root", default=None, help="where named CLIP models are looked up (default: ~/.cache/clip)"
    )
    group.add_argument(
        "--retriever_precision",
        choices=sorted(PRECISIONS),
        default="fp32",
        help="precision the retriever computes embeddings in; scores are always fp32",
    )


def add_game_options(parser):
    group = parser.add_argument_group("game (REINFORCE)")
    group.add_argument("--reward", choices=REWARDS, default="logprob", help="reward of a caption")
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
        help="REINFORCE baseline: running mean of past rewards, none, or the reward of the greedy caption",
    )
    group.add_argument("--entropy_coeff", type=float, default=0.0, help="weight of the sender entropy bonus")
    group.add_argument(
        "--standardize_advantage",
        action="store_true",
        help="rescale advantages to zero mean and unit variance within each batch (off by default); this "
        "removes any constant baseline, so it makes the running-mean baseline irrelevant",
    )
    group.add_argument(
        "--kl_coeff",
        type=float,
        default=0.0,
        help="weight of a KL penalty towards the pretrained captioner (keeps the language fluent; 0 = off)",
    )


def find_game(name):
    """The path of a game file: an existing path, or a name in the packaged games/ directory."""
    if os.path.isfile(name):
        return name
    packaged = importlib.resources.files(__package__ + ".game_files") / f"{name}.json"
    if packaged.is_file():
        return str(packaged)
    available = sorted(p.name[:-5] for p in importlib.resources.files(__package__ + ".game_files").iterdir()
                       if p.name.endswith(".json"))  # fmt: skip
    raise UsageError(f"no game file {name!r}: give a JSON path or one of {available}")


def has_game(name):
    """Whether a game file of that name is packaged (data sets used only for evaluation have none)."""
    return (importlib.resources.files(__package__ + ".game_files") / f"{name}.json").is_file()


def read_game(path, known):
    """Option values from a game file, checked against the known option names."""
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read game file {path}: {error}") from None
    if not isinstance(values, dict):
        raise UsageError(f"game file {path} must hold a JSON object of option values")
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"game file {path} sets unknown options: {', '.join(unknown)}")
    return values


def build_parser(prog=None, description=None):
    """The parser with every group of this plugin (EGG's common options are added by ``core.init``)."""
    parser = Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_options(parser)
    add_captioner_options(parser)
    add_retriever_options(parser)
    add_game_options(parser)
    return parser


def game_arguments(values, parser):
    """Command-line tokens for a game file's values, to be placed before the user's own.

    EGG's ``core.init`` adds its options with explicit defaults after we hand it the parser, so
    ``set_defaults`` cannot reach them; arguments given earlier on the command line are overridden by later ones.
    """
    tokens = []
    for key, value in values.items():
        if value is True:
            tokens.append(f"--{key}")
        elif value is False:
            if f"--no-{key}" in parser._option_string_actions:  # --flag/--no-flag options
                tokens.append(f"--no-{key}")
        elif value is not None:
            tokens += [f"--{key}", str(value)]
    return tokens


def get_opts(params, prog=None, description=None, extra_options=None):
    """Parses ``params`` (a list of strings) into the run's options; ``extra_options(parser)`` adds more."""
    preliminary = Parser(prog=prog, add_help=False)  # finds the game file before the full parse
    preliminary.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    preliminary.add_argument("--game", default=None)
    known, _ = preliminary.parse_known_args(params)
    game_path = find_game(known.game or known.dataset) if known.game or has_game(known.dataset) else None
    parser = build_parser(prog, description)
    if extra_options is not None:
        extra_options(parser)
    values = read_game(game_path, {action.dest for action in parser._actions} | EGG_OPTIONS) if game_path else {}
    parser.description = f"{description or ''} Game file {game_path} sets: " + ", ".join(
        f"{key}={value}" for key, value in values.items()
    )
    opts = core.init(arg_parser=parser, params=game_arguments(values, parser) + list(params))
    opts.game = game_path
    return opts


def apply_model_defaults(opts, dataset):
    """Fills unset model options from the data set's own models, then from the released ones.

    A data set's own models come as a whole per model: once any of a model's files is given on the command
    line (say, a released ClipCap checkpoint), its other options default to the released models too.
    """
    own = dataset.model_defaults(opts)
    for group in MODEL_GROUPS:
        use_own = all(getattr(opts, key) is None for key in group)
        for key in group:
            standard = MODEL_DEFAULTS[key]
            if key == "clip_model":
                standard = standard[opts.clip_backend]
            if getattr(opts, key) is None:
                setattr(opts, key, own.get(key, standard) if use_own else standard)
    return opts
