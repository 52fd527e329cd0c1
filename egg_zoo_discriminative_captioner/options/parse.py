"""Command-line options: the plugin's argument groups (``options/groups.py``) on top of EGG's common options.

Values come in three layers: the plugin's defaults (for EGG's options too: the paper's settings, never EGG's toy
defaults), then a game file (``--game``: one JSON file per experiment, by default the chosen data set's), then
the command line.  The first two become the parser's defaults right before it parses, so ``--help`` shows the
values the run will use and where each one comes from.  Model options left unset fall back to the data set's own
models (the synthetic world has some) and then to the released models.

Options are parsed twice: first without torch (EGG's options from ``options/egg.py``), so that ``--help`` and bad
options answer at once; then by the active core's ``init``, which seeds and picks the device.  Option prefixes are
refused (``--n_epoch`` is not ``--n_epochs``).
"""

import argparse
import importlib.resources
import json
import os
import re

from ..choices import GROUP_BASELINES
from ..data import DATASETS, OWN_MODELS, check_batch_size
from ..runtime.errors import UsageError
from .egg import EGG_HELP, EGG_OPTIMIZERS, EGG_OPTIONS, PLUGIN_DEFAULTS, add_common_options
from .groups import (
    CAPTIONER_OPTIONS,
    COMMAND_HELP,
    COMMANDS,
    UNUSED,
    UNUSED_GROUPS,
    add_plugin_groups,
    resolve_rollouts,
)

GAME_FILES = __package__.rpartition(".")[0] + ".game_files"  # the repository's games/, packaged

# Model options whose default depends on the data set: the released models unless the data set brings its own.
MODEL_DEFAULTS = {
    "clip_model": {"openai": "ViT-B/32", "open_clip": "ViT-B-32", "transformers": "openai/clip-vit-base-patch32"},
    "captioner_clip_model": "ViT-B/32",
    "clipcap_checkpoint": None,
    "language_model": "gpt2",
    "hf_model": None,  # --captioner hf: required, unless the data set brings one (the synthetic world)
}
MODEL_GROUPS = (("clipcap_checkpoint", "language_model", "captioner_clip_model"), ("clip_model",), ("hf_model",))


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
    """An ArgumentParser whose errors are one line (the full usage is a screenful here), refusing prefixes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Parser(OneLineErrors):
    """The plugin's parser: layered defaults, EGG's options grouped and explained, values checked once parsed.

    EGG's options are added (by ``core.init`` or ``add_common_options``) before the first parse, which prepares
    the parser.  ``command`` (train, evaluate, caption) decides which options ``--help`` shows and how it explains
    them.
    """

    def __init__(self, prog=None, description=None, command="train"):
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; choose one of {COMMANDS}")
        self.command = command
        self.layers = []  # (values, source), later layers win
        self.sources = {}
        self.prepared = False
        description = description.replace("``", "") if description else description  # reST quotes, not for a terminal
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
        check_options(opts, self.command == "train")
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
        for action in self._actions:
            action.help = COMMAND_HELP.get(self.command, {}).get(action.dest, action.help)
        for action in self.unused_actions():
            action.help = argparse.SUPPRESS
        actions = {}
        for action in self._actions:  # an option's first action holds its default (not its --no- switch)
            if action.option_strings:
                actions.setdefault(action.dest, action)
        for values, source in self.layers:
            for key, value in values.items():
                actions[key].default = checked_value(actions[key], value, source)
                self.sources[key] = source

    def unused_actions(self):
        """The actions of the options this parser's command does not use."""
        groups = [g for g in self._action_groups if g.title in UNUSED_GROUPS[self.command]]
        unused = UNUSED[self.command]
        return [a for a in self._actions if a.dest in unused or any(a in g._group_actions for g in groups)]

    def ignored_options(self, params):
        """The options in ``params`` that this parser's command does not use."""
        unused = {string for action in self.unused_actions() for string in action.option_strings}
        return list(dict.fromkeys(p.split("=")[0] for p in params if p.split("=")[0] in unused))

    def given_options(self, params):
        """The destinations of the options given in ``params`` (the command line, not a game file)."""
        actions = self._option_string_actions
        return {actions[p.split("=")[0]].dest for p in params if p.split("=")[0] in actions}


def checked_value(action, value, source):
    """A game file's (or the plugin's) value for ``action``, typed and checked as the command line would be."""
    where = f"{source}: {action.dest}"
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if value is None:
        return None
    if isinstance(value, list) and action.nargs in ("+", "*") and value:  # e.g. several --clip_model
        return [checked_value(argparse.Action(action.option_strings, action.dest, type=action.type,
                                              choices=action.choices), item, source) for item in value]  # fmt: skip
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

    split_retrievers(opts)
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
    at_least("micro_batch_size", 1)
    at_least("rollout_batch_size", 1)
    at_least("warmup_steps", 0)
    if getattr(opts, "max_grad_norm", None) is not None and not opts.max_grad_norm > 0:
        raise UsageError(f"--max_grad_norm must be positive, got {opts.max_grad_norm}")
    if opts.extra_clip_models and getattr(opts, "hard_distractors", 0):
        raise UsageError("--hard_distractors reads the first retriever's neighbours: give one --clip_model")
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
    datasets = getattr(opts, "datasets", None) or [opts.dataset]  # evaluate's --datasets
    if getattr(opts, "data_root", None) and set(datasets) <= OWN_MODELS:
        raise UsageError(f"--data_root is where a real data set is read from; {', '.join(datasets)} is built in "
                         "(its cache is --cache_dir): drop --data_root or choose a --dataset")  # fmt: skip
    if hasattr(opts, "rollouts"):  # --greedy_rollouts is --rollouts greedy unless --rollouts is given
        opts.rollouts = resolve_rollouts(opts)
        opts.greedy_rollouts = opts.rollouts == "greedy"
    rollouts = getattr(opts, "rollouts", None)
    per_image, baseline = getattr(opts, "rollouts_per_image", 1), getattr(opts, "baseline", None)
    if training and per_image < 1:
        raise UsageError(f"--rollouts_per_image must be at least 1, got {per_image}")
    if training and baseline in GROUP_BASELINES and per_image < 2:
        raise UsageError(f"--baseline {baseline} compares an image's rollouts with each other: it needs "
                         "--rollouts_per_image 2 or more")  # fmt: skip
    if training and per_image > 1 and rollouts != "sample":
        raise UsageError(f"--rollouts_per_image {per_image} needs --rollouts sample: {rollouts} decoding gives "
                         "every rollout of an image the same caption")  # fmt: skip
    if rollouts == "greedy" and getattr(opts, "baseline", None) == "greedy":
        raise UsageError(
            "--rollouts greedy (--greedy_rollouts) with --baseline greedy gives every caption an advantage of exactly "
            "zero (the rollout is the greedy caption): nothing would train; drop one of them"
        )
    # evaluate and caption neither roll out nor regularise: a game file's values for training stay unused there
    kl_on = training and getattr(opts, "kl_coeff", 0) > 0
    if kl_on and rollouts in ("greedy", "beam") and opts.kl_estimator == "sampled":
        raise UsageError(f"--kl_coeff with --rollouts {rollouts} needs --kl_estimator exact: on {rollouts} "
                         "captions the sampled estimate log p - log p_ref is a log-ratio, not a KL, and can be "
                         "negative")  # fmt: skip
    check_hf_options(opts)
    if kl_on and getattr(opts, "kl_reference", None) == "language_model" and opts.captioner == "blip":
        raise UsageError("--kl_reference language_model has no meaning for BLIP (its text decoder reads the "
                         "image in every layer; there is no plain language model to compare with): use "
                         "captioner")  # fmt: skip


def check_applicable(opts, given):
    """Refuses, in one line, an option of the command line (``given``: destinations) that has no effect with the
    chosen captioner or retriever, naming what it needs."""
    captioner = getattr(opts, "captioner", None)
    for needed, names in CAPTIONER_OPTIONS.items():
        wrong = sorted(f"--{name}" for name in names & given if captioner != needed)
        if wrong:
            raise UsageError(f"{', '.join(wrong)} {'needs' if len(wrong) == 1 else 'need'} --captioner {needed} "
                             f"(this run's captioner is {captioner})")  # fmt: skip
    if "retriever_mix" in given and opts.retriever_mix != "mean" and not opts.extra_clip_models:
        raise UsageError(f"--retriever_mix {opts.retriever_mix} mixes several retrievers: give --clip_model A B ...")
    if "clip_pretrained" in given and opts.clip_backend != "open_clip":
        raise UsageError("--clip_pretrained names open_clip weights: it needs --clip_backend open_clip")


def split_retrievers(opts):
    """``--clip_model A B ...`` -> ``clip_model`` A (the run's retriever) and ``extra_clip_models`` [B, ...] (with
    ``--clip_pretrained`` likewise), so that one retriever reads as it always did.

    A model given as ``BACKEND:MODEL[:PRETRAINED]`` (as ``--eval_retrievers`` takes it) brings its own backend,
    so that one run mixes backends; ``--clip_backend`` is the backend of the plain names.  The first model's spec
    becomes ``clip_backend``/``clip_model``/``clip_pretrained``; the other retrievers keep their text, plain names
    after a first spec of another backend written with the backend they were given under."""
    from ..evaluation.other_retrievers import names_backend, parse_retriever

    models, pretrained = getattr(opts, "clip_model", None), getattr(opts, "clip_pretrained", None)
    if isinstance(models, (list, tuple)):
        specs = [parse_retriever(text, "--clip_model") if names_backend(text) else None for text in models]
        several_weights = isinstance(pretrained, (list, tuple)) and len(pretrained) > 1
        if any(specs) and several_weights:
            raise UsageError("--clip_model with BACKEND:MODEL specs takes each open_clip model's weights in its "
                             "spec (open_clip:MODEL:PRETRAINED), not several --clip_pretrained")  # fmt: skip
        plain_backend, first = opts.clip_backend, specs[0]
        if all(specs) and plain_backend not in ("openai", first.backend):  # set, and used by no model
            raise UsageError(f"--clip_backend {plain_backend} is the backend of plain --clip_model names, and each "
                             "--clip_model here names its own (BACKEND:MODEL): drop --clip_backend")  # fmt: skip
        if first is not None:
            if first.pretrained and pretrained:
                raise UsageError(f"--clip_model {first.text} names its weights: drop --clip_pretrained")
            opts.clip_backend, models = first.backend, [first.model] + list(models[1:])
            pretrained = [first.pretrained] if first.pretrained else pretrained
        extra = [text if spec or opts.clip_backend == plain_backend else f"{plain_backend}:{text}"
                 for text, spec in zip(models[1:], specs[1:])]  # fmt: skip
        opts.clip_model, opts.extra_clip_models = models[0], extra
    elif not hasattr(opts, "extra_clip_models"):
        opts.extra_clip_models = []
    if isinstance(pretrained, (list, tuple)):
        if len(pretrained) not in (1, 1 + len(opts.extra_clip_models)):
            raise UsageError(f"--clip_pretrained gives {len(pretrained)} weights for {1 + len(opts.extra_clip_models)} "
                             "--clip_model: give one per model")  # fmt: skip
        opts.clip_pretrained, opts.extra_clip_pretrained = pretrained[0], list(pretrained[1:])
    elif not hasattr(opts, "extra_clip_pretrained"):
        opts.extra_clip_pretrained = []


def check_hf_options(opts):
    """``--captioner hf``'s options: a model to load, and LoRA settings that mean something."""
    if getattr(opts, "lora_rank", 0) < 0:
        raise UsageError(f"--lora_rank must not be negative, got {opts.lora_rank}")
    if getattr(opts, "hf_image_size", None) is not None and opts.hf_image_size < 1:
        raise UsageError(f"--hf_image_size must be positive, got {opts.hf_image_size}")
    if getattr(opts, "captioner", None) != "hf":
        return
    datasets = getattr(opts, "datasets", None) or [opts.dataset]
    if not opts.hf_model and not set(datasets) <= OWN_MODELS:  # the synthetic world brings its own
        raise UsageError("--captioner hf needs --hf_model: a transformers hub id or a local directory")
    lora_only = [f"--{name}" for name in ("lora_alpha", "lora_targets") if getattr(opts, name, None)]
    lora_only += ["--merge_lora"] if getattr(opts, "merge_lora", False) else []
    if lora_only and not opts.lora_rank:
        raise UsageError(f"{', '.join(lora_only)} set LoRA's adapters: give --lora_rank r too")
    if opts.lora_rank and opts.hf_train_vision:
        raise UsageError("--lora_rank trains adapters on the language model only: drop --hf_train_vision")
    if getattr(opts, "kl_coeff", 0) > 0 and getattr(opts, "kl_reference", None) == "language_model":
        raise UsageError("--kl_reference language_model needs --captioner clipcap; use captioner")


def find_game(name):
    """The path of a game file: an existing path, or a name in the packaged games/ directory."""
    if os.path.isfile(name):
        return name
    packaged = importlib.resources.files(GAME_FILES) / f"{name}.json"
    if packaged.is_file():
        return str(packaged)
    available = sorted(p.name[:-5] for p in importlib.resources.files(GAME_FILES).iterdir()
                       if p.name.endswith(".json"))  # fmt: skip
    raise UsageError(f"no game file {name!r}: give a JSON path or one of {available}")


def has_game(name):
    """Whether a game file of that name is packaged (data sets used only for evaluation have none)."""
    return (importlib.resources.files(GAME_FILES) / f"{name}.json").is_file()


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


def build_parser(prog=None, description=None, command="train"):
    """The parser with every group of this plugin (EGG's common options are added by ``core.init``)."""
    parser = Parser(prog=prog, description=description, command=command)
    add_plugin_groups(parser)
    return parser


def get_opts(params, prog=None, description=None, extra_options=None, command="train"):
    """Parses ``params`` (a list of strings) into the run's options; ``extra_options(parser)`` adds more.

    ``command`` (train, evaluate, caption) decides which options ``--help`` shows.  ``--help`` and impossible
    options end in the first parse, before torch is imported.
    """
    params = list(params)
    preliminary = OneLineErrors(prog=prog, add_help=False)  # finds the game file before the full parse
    preliminary.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    preliminary.add_argument("--game", default=None)
    known, _ = preliminary.parse_known_args(params)
    game_path = find_game(known.game or known.dataset) if known.game or has_game(known.dataset) else None

    def layered_parser():
        parser = build_parser(prog, description, command)
        if extra_options is not None:
            extra_options(parser)
        if game_path:
            values = read_game(game_path, {action.dest for action in parser._actions} | EGG_OPTIONS)
        parser.add_defaults(PLUGIN_DEFAULTS, "paper's settings")
        if game_path:
            parser.add_defaults(values, f"game file {known.game or os.path.basename(game_path)}")
        return parser

    parser = layered_parser()
    add_common_options(parser)  # upstream EGG's options, as the core's init adds them
    parsed = parser.parse_args(params)  # --help and bad options end here
    ignored = parser.ignored_options(params)
    if ignored:
        raise UsageError(f"{command} does not use {', '.join(ignored)}: drop {'it' if len(ignored) == 1 else 'them'}")
    check_applicable(parsed, parser.given_options(params))

    from ..core import core
    from ..runtime import distributed  # torch: from here on the run is real

    distributed.check_launch(params)  # before the core's init starts the process group
    opts = core.init(arg_parser=layered_parser(), params=params)
    opts.game = game_path
    opts.seed_drawn = parsed.random_seed is None  # neither the command line nor the game file chose it
    return opts


def apply_model_defaults(opts, dataset=None):
    """Fills unset model options from the data set's own models (``dataset``, if given), then from the released
    ones.

    A data set's own models come as a whole per model: once any of a model's files is given on the command
    line (say, a released ClipCap checkpoint), its other options default to the released models too.
    """
    own = dataset.model_defaults(opts) if dataset is not None else {}
    for group in MODEL_GROUPS:
        use_own = all(getattr(opts, key, None) is None for key in group)
        for key in group:
            standard = MODEL_DEFAULTS[key]
            if key == "clip_model":
                standard = standard[opts.clip_backend]
            if getattr(opts, key, None) is None:
                setattr(opts, key, own.get(key, standard) if use_own else standard)
    return opts
