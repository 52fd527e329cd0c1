"""Command-line options: one argument group per concern, on top of EGG's common options (``core.init``).

Values come in three layers: the plugin's defaults (for EGG's options too: the paper's settings, never EGG's toy
defaults), then a game file (``--game``: one JSON file per experiment, by default the chosen data set's), then
the command line.  The first two become the parser's defaults right before it parses (``core.init`` adds EGG's
options to our parser and parses at once), so ``--help`` shows the values the run will use and where each one
comes from.  Model options left unset fall back to the data set's own models (the synthetic world has some) and
then to the released models.
"""

import argparse
import importlib.resources
import json
import os
import re

from .captioners import CAPTIONERS
from .captioners.blip import DEFAULT_PROMPT
from .captioners.clipcap import MAPPING_TYPES
from .core import core
from .data import DATASETS, check_batch_size
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

# The plugin's values for EGG's options: the paper's (Adam at a constant 1e-7, batches of 100, captions of at
# most 40 tokens, 2 epochs as for Conceptual Captions), and a checkpoint every epoch.
PLUGIN_DEFAULTS = {
    "n_epochs": 2, "batch_size": 100, "optimizer": "adam", "lr": 1e-7, "max_len": 40, "checkpoint_freq": 1,
}  # fmt: skip
EGG_OPTIMIZERS = ("adam", "sgd", "adagrad")

# What EGG's options mean in this game; None: EGG's own text.  vocab_size is not used (captions use the
# captioner's tokenizer), so --help leaves it out.
EGG_HELP = {
    "random_seed": "seed of the run: model sampling, and each epoch's data order with the epoch number "
    "(unset: drawn at random and saved in opts.json)",
    "checkpoint_dir": "where checkpoints, opts.json and the finetuned captioner are written ('' for nowhere)",
    "preemptable": "resume from the newest checkpoint in --checkpoint_dir if there is one (for jobs that get "
    "preempted and requeued)",
    "checkpoint_freq": "write <epoch>.tar every k epochs (0: only final.tar)",
    "validation_freq": "validate every k epochs (0: never, not even before the first update)",
    "n_epochs": "epochs to train (in all, counting those of a resumed checkpoint)",
    "load_from_checkpoint": "resume from this checkpoint (.tar): parameters, optimizer, baseline, data order "
    "position and random state",
    "no_cuda": "run on the CPU even where CUDA is available",
    "batch_size": "images per training batch: each target with the other B - 1 as distractors",
    "optimizer": f"optimizer, one of {', '.join(EGG_OPTIMIZERS)} (constant learning rate)",
    "lr": "learning rate",
    "update_freq": "accumulate gradients over k batches per optimizer update",
    "vocab_size": argparse.SUPPRESS,
    "max_len": "maximum caption length in tokens (captions also stop at '.' or the end-of-text token)",
    "tensorboard": "log to TensorBoard (facebookresearch EGG only)",
    "tensorboard_dir": "TensorBoard log directory",
    "distributed_port": "port for SLURM-launched distributed runs (facebookresearch EGG)",
    "fp16": "mixed precision (CUDA autocast) for the game; the retriever's scores stay fp32",
}
# Options evaluate has (it shares the parser) but does not use: --help leaves them out there.
TRAINING_ONLY = {
    "random_seed", "checkpoint_dir", "preemptable", "checkpoint_freq", "validation_freq", "n_epochs", "batch_size",
    "optimizer", "lr", "update_freq", "tensorboard", "tensorboard_dir", "distributed_port", "fp16", "num_workers",
    "greedy_rollouts", "checkpoint_every", "overwrite",
}  # fmt: skip
TRAINING_GROUPS = ("game (REINFORCE)",)

# Model options whose default depends on the data set: the released models unless the data set brings its own.
MODEL_DEFAULTS = {
    "clip_model": {"openai": "ViT-B/32", "transformers": "openai/clip-vit-base-patch32"},
    "captioner_clip_model": "ViT-B/32",
    "clipcap_checkpoint": None,
    "language_model": "gpt2",
}
MODEL_GROUPS = (("clipcap_checkpoint", "language_model", "captioner_clip_model"), ("clip_model",))

BASELINES = ("mean", "none", "greedy")


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's value once, with where it comes from (``sources``: option -> 'game file ...')."""

    sources = {}
    # BooleanOptionalAction appends a default of its own: drop it, the value is shown once below.
    OWN_DEFAULT = re.compile(r"\s*\(default: %\(default\)s\)")

    def _get_help_string(self, action):
        text = self.OWN_DEFAULT.sub("", action.help or "")
        if action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        value = "%(default)s" if not isinstance(action.default, bool) else ("on" if action.default else "off")
        source = self.sources.get(action.dest)
        return f"{text} (default: {value}{', from the ' + source if source else ''})"


class OneLineErrors(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the full usage is a screenful here)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Parser(OneLineErrors):
    """The plugin's parser: layered defaults, EGG's options grouped and explained, values checked once parsed.

    ``core.init`` adds EGG's options and parses at once, so the preparation happens on the first parse.
    With ``training=False`` (evaluate), ``--help`` leaves out the options only training uses.
    """

    def __init__(self, prog=None, description=None, training=True):
        self.training = training
        self.layers = []  # (values, source), later layers win
        self.sources = {}
        self.prepared = False
        super().__init__(prog=prog, description=description, formatter_class=HelpFormatter, usage="%(prog)s [options]")

    def add_defaults(self, values, source):
        """A layer of default values (``source`` names it in --help), above the earlier layers."""
        self.layers.append((values, source))

    def _get_formatter(self):
        formatter = super()._get_formatter()
        formatter.sources = self.sources
        return formatter

    def parse_known_args(self, args=None, namespace=None):
        if not self.prepared:
            self.prepared = True
            self.prepare()
        opts, rest = super().parse_known_args(args, namespace)
        check_options(opts, self.training)
        return opts, rest

    def prepare(self):
        """Groups and documents EGG's options (present by now), then applies the default layers."""
        group = self.add_argument_group("EGG (common options; see also the README)")
        for action in [action for action in self._optionals._group_actions if action.dest in EGG_OPTIONS]:
            self._optionals._group_actions.remove(action)
            group._group_actions.append(action)
            action.help = EGG_HELP.get(action.dest, action.help)
            if action.nargs == 0 and action.default is False and action.dest != "no_cuda":
                # EGG's flags are store_true: give each an off switch, so a game file's 'true' can be undone.
                group.add_argument(f"--no-{action.dest}", dest=action.dest, action="store_false",
                                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # fmt: skip
                action.help += f" (--no-{action.dest} switches it off)"
        if not self.training:
            for action in self._actions:
                if action.dest in TRAINING_ONLY or any(
                    action in g._group_actions for g in self._action_groups if g.title in TRAINING_GROUPS
                ):
                    action.help = argparse.SUPPRESS
        actions = {}
        for action in self._actions:  # an option's first action holds its default (not its --no- switch)
            if action.option_strings:
                actions.setdefault(action.dest, action)
        for values, source in self.layers:
            for key, value in values.items():
                actions[key].default = checked_value(actions[key], value, source)
                self.sources[key] = source


def checked_value(action, value, source):
    """A game file's (or the plugin's) value for ``action``, typed and checked as the command line would be."""
    where = f"{source}: {action.dest}"
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if value is None:
        return None
    if isinstance(value, (bool, list, dict)):
        raise UsageError(f"{where} must be a single value, got {value!r}")
    if action.type is not None:
        try:
            value = action.type(str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise UsageError(f"{where}: invalid value {value!r}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def check_options(opts, training=True):
    """Rejects values no run can use, before anything is loaded: one UsageError naming the option.

    ``training=False`` (evaluate, caption): ``--batch_size`` only groups images, so one image is enough.
    """
    def at_least(name, minimum):
        value = getattr(opts, name, None)
        if value is not None and value < minimum:
            raise UsageError(f"--{name} must be at least {minimum}, got {value}")

    if not hasattr(opts, "n_epochs"):  # the parse that finds the game file, before EGG's options exist
        return
    at_least("n_epochs", 1)
    at_least("max_len", 1)
    at_least("update_freq", 1)
    at_least("checkpoint_freq", 0)
    at_least("checkpoint_every", 0)
    at_least("num_beams", 1)
    at_least("eval_candidates", 2)
    at_least("num_workers", 0)
    if not training:
        at_least("batch_size", 1)
    else:
        check_batch_size(opts.batch_size)
    if opts.optimizer not in EGG_OPTIMIZERS:
        raise UsageError(f"--optimizer {opts.optimizer!r} is not one of {', '.join(EGG_OPTIMIZERS)}")
    if not opts.lr > 0:
        raise UsageError(f"--lr must be positive, got {opts.lr}")
    if getattr(opts, "reward_temperature", None) is not None and not opts.reward_temperature > 0:
        raise UsageError(f"--reward_temperature must be positive, got {opts.reward_temperature}")
    if getattr(opts, "kl_coeff", 0) < 0:
        raise UsageError(f"--kl_coeff must not be negative, got {opts.kl_coeff}")
    if getattr(opts, "greedy_rollouts", False) and getattr(opts, "baseline", None) == "greedy":
        raise UsageError(
            "--greedy_rollouts with --baseline greedy gives every caption an advantage of exactly zero (the "
            "rollout is the greedy caption): nothing would train; drop one of them"
        )


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
        "--blip_train_vision",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="finetune BLIP's vision encoder too (off: frozen)",
    )
    group.add_argument("--num_beams", type=int, default=5, help="beam size for validation and test captions")
    group.add_argument(
        "--greedy_rollouts",
        action=argparse.BooleanOptionalAction,
        default=False,
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
        help="retriever CLIP. openai backend: a name (ViT-B/32, ...) or a local .pt file, ViT-B/32 if unset; "
        "transformers backend: a hub id or local directory, openai/clip-vit-base-patch32 if unset; the "
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
        action=argparse.BooleanOptionalAction,
        default=False,
        help="rescale advantages to zero mean and unit variance within each batch; this removes any constant "
        "baseline, so it makes the running-mean baseline irrelevant",
    )
    group.add_argument(
        "--kl_coeff",
        type=float,
        default=0.0,
        help="weight of a KL penalty towards the pretrained captioner (keeps the language fluent; 0 = off)",
    )
    group.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="fp32",
        help="the captioner's training precision (autocast; fp16 needs CUDA and is EGG's --fp16, with a "
        "GradScaler); the retriever, the reward and the KL reference stay in fp32",
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


def add_run_options(parser):
    group = parser.add_argument_group("checkpoints and resuming (with EGG's --checkpoint_dir, --load_from_checkpoint)")
    group.add_argument(
        "--checkpoint_every",
        type=int,
        default=0,
        help="also write a resumable checkpoint (latest.tar) every N optimizer updates, within epochs (0: off)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="let a new run replace the checkpoints and finetuned captioner of another run in --checkpoint_dir",
    )


def build_parser(prog=None, description=None, training=True):
    """The parser with every group of this plugin (EGG's common options are added by ``core.init``)."""
    parser = Parser(prog=prog, description=description, training=training)
    add_data_options(parser)
    add_captioner_options(parser)
    add_retriever_options(parser)
    add_game_options(parser)
    add_run_options(parser)
    return parser


def get_opts(params, prog=None, description=None, extra_options=None, training=True):
    """Parses ``params`` (a list of strings) into the run's options; ``extra_options(parser)`` adds more.

    ``training=False`` (evaluate) leaves the options only training uses out of ``--help``.
    """
    preliminary = OneLineErrors(prog=prog, add_help=False)  # finds the game file before the full parse
    preliminary.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    preliminary.add_argument("--game", default=None)
    known, _ = preliminary.parse_known_args(params)
    game_path = find_game(known.game or known.dataset) if known.game or has_game(known.dataset) else None
    parser = build_parser(prog, description, training)
    if extra_options is not None:
        extra_options(parser)
    values = read_game(game_path, {action.dest for action in parser._actions} | EGG_OPTIONS) if game_path else {}
    parser.add_defaults(PLUGIN_DEFAULTS, "paper's settings")
    if game_path:
        parser.add_defaults(values, f"game file {known.game or os.path.basename(game_path)}")
    opts = core.init(arg_parser=parser, params=list(params))
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
