"""Command-line options: the plugin's argument groups (``options/groups.py``) on top of EGG's common options.

Values come in three layers: the plugin's defaults (for EGG's options too: the paper's settings, never EGG's toy
defaults), then a game file (``--game``: one JSON file per experiment, by default the chosen data set's), then
the command line.  The first two become the parser's defaults right before it parses, so ``--help`` shows the
values the run will use and where each one comes from.  The parsed values become the run's ``RunConfig``
(``config.py``), typed and frozen; model options left unset fall back to the data set's own models (the synthetic
world has some) and then to the released models (``RunConfig.with_model_defaults``).

Options are parsed twice: first without torch (EGG's options from ``options/egg.py``), so that ``--help`` and bad
options answer at once; then by the active core's ``init``, which seeds and picks the device.  Option prefixes are
refused (``--n_epoch`` is not ``--n_epochs``).
"""

import argparse
import importlib.resources
import json
import os
import re

from ..data import DATASETS
from ..runtime.errors import UsageError
from .checks import check_applicable, check_options, derive
from .config import COMMAND_CONFIGS, RunConfig, current_names
from .egg import EGG_HELP, EGG_OPTIONS, PLUGIN_DEFAULTS, add_common_options
from .groups import COMMAND_HELP, COMMANDS, UNUSED, UNUSED_GROUPS, add_plugin_groups

GAME_FILES = __package__.rpartition(".")[0] + ".game_files"  # the repository's games/, packaged

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
        derive(opts, self.command)
        check_options(opts, self.command)
        return opts, rest

    def prepare(self):
        """Groups and documents EGG's options (present by now), then applies the default layers."""
        group = self.add_argument_group("EGG (common options)")
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
    """Option values from a game file, checked against the known option names (an older version's names read as
    the current ones)."""
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read game file {path}: {error}") from None
    if not isinstance(values, dict):
        raise UsageError(f"game file {path} must hold a JSON object of option values")
    values = current_names(values)
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
    """Parses ``params`` (a list of strings) into the run's config (``config.COMMAND_CONFIGS[command]``, whose
    fields are the options); ``extra_options(parser)`` adds the command's own options (evaluate's, caption's).

    ``command`` (train, evaluate, caption) decides which options ``--help`` shows.  ``--help`` and impossible
    options end in the first parse, before torch is imported.
    """
    params = list(params)
    layered_parser, _, derived = parse(params, prog, description, extra_options, command)

    from ..core import core
    from ..runtime import distributed  # torch: from here on the run is real

    distributed.check_launch(params)  # before the core's init starts the process group
    namespace = core.init(arg_parser=layered_parser(), params=params)  # EGG's options, which its Trainer reads
    namespace.device = distributed.rank_device(namespace)
    return COMMAND_CONFIGS[command].from_values({**vars(namespace), **derived})


def config_of(params=(), device="cpu", distributed_context=None):
    """The run config of ``params`` without the core's init (nothing seeded, no process group), on ``device`` in
    ``distributed_context`` (default: one process): for code that builds the game without a command, such as
    another EGG experiment or a test.  An unset ``--random_seed`` stays None."""
    import torch

    from ..egg_compat.distributed import DistributedContext

    _, parsed, derived = parse(list(params), None, None, None, "train")
    context = distributed_context or DistributedContext()
    process = {"device": torch.device(device), "distributed_context": context}
    return RunConfig.from_values({**vars(parsed), **derived, **process})


def parse(params, prog, description, extra_options, command):
    """The first parse, without torch: ``(layered_parser, options, derived)``, ``derived`` the config's values that
    come from the launch rather than an option (the game file, whether the seed was chosen); ``layered_parser()``
    makes the parser again for the core's init.  ``--help`` and bad options end here."""
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
    parsed = parser.parse_args(params)
    ignored = parser.ignored_options(params)
    if ignored:
        raise UsageError(f"{command} does not use {', '.join(ignored)}: drop {'it' if len(ignored) == 1 else 'them'}")
    check_applicable(parsed, parser.given_options(params))
    # seed_drawn: neither the command line nor the game file chose the seed (the core's init draws it)
    derived = {"game": game_path, "seed_drawn": parsed.random_seed is None, "hf_model_named": None}
    return layered_parser, parsed, derived
