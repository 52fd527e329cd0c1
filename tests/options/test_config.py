"""The run config: built once from the parsed options, typed and frozen; each default written once; the package's
layers (models and method never import the option modules); older runs' opts.json still read."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import egg.zoo.discriminative_captioner as plugin
from egg.zoo.discriminative_captioner.caption import add_caption_options
from egg.zoo.discriminative_captioner.evaluate import add_evaluation_options
from egg.zoo.discriminative_captioner.options.config import CaptionConfig, EvaluateConfig, RunConfig
from egg.zoo.discriminative_captioner.options.parse import add_common_options, build_parser, get_opts

PACKAGE = Path(plugin.__file__).parent
# fields that are no option: derived while parsing, or this process's (the EGG core's init)
NOT_OPTIONS = {"extra_clip_models", "extra_clip_pretrained", "seed_drawn", "hf_model_named", "device",
               "distributed_context"}  # fmt: skip
# the models and the method: they take a config (or plain arguments), never the command line's modules
MODEL_AND_METHOD = ["captioners", "retrievers", "data", "synthetic", "archs.py", "game.py", "games.py", "losses.py",
                    "baselines.py", "micro_batches.py", "kl_references.py", "experiment.py"]  # fmt: skip


def option_names(extra_options=None, command="train"):
    parser = build_parser(command=command)
    if extra_options is not None:
        extra_options(parser)
    add_common_options(parser)
    return {action.dest for action in parser._actions if action.dest != "help"}


@pytest.mark.parametrize("config_class, extra_options, command", [
    (RunConfig, None, "train"), (EvaluateConfig, add_evaluation_options, "evaluate"),
    (CaptionConfig, add_caption_options, "caption"),
])  # fmt: skip
def test_every_option_is_a_field_of_its_commands_config(config_class, extra_options, command):
    fields = {field.name for field in dataclasses.fields(config_class)}
    assert fields - NOT_OPTIONS == option_names(extra_options, command)


def test_the_run_config_cannot_be_changed_once_built():
    config = get_opts(["--clip_model", "ViT-B/32", "ViT-B/16", "--allow_option_change", "lr", "reward"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.extra_clip_models = ()
    assert config.extra_clip_models == ("ViT-B/16",) and config.allow_option_change == ("lr", "reward")  # tuples
    lr = config.lr
    changed = config.replace(lr=2.0, extra_clip_models=["x"])
    assert (config.lr, changed.lr, changed.extra_clip_models) == (lr, 2.0, ("x",))  # a new config


def test_a_config_is_saved_as_json_and_built_again_from_it():
    config = get_opts(["--clip_model", "ViT-B/32", "ViT-B/16", "--kl_coeff", "0.1"])
    saved = json.loads(json.dumps(config.saved_values()))
    assert "device" not in saved and saved["extra_clip_models"] == ["ViT-B/16"]
    process = {"device": config.device, "distributed_context": config.distributed_context}
    assert RunConfig.from_values({**saved, **process}) == config
    with pytest.raises(ValueError, match="needs values for kl_coeff"):
        RunConfig.from_values({key: value for key, value in saved.items() if key != "kl_coeff"})


def test_the_old_name_of_the_decoder_option_still_parses(tmp_path):
    assert get_opts(["--decoding", "generate"]).decoder == "generate"
    assert get_opts(["--decoder", "static"]).decoder == "static"
    game = tmp_path / "old.json"
    game.write_text(json.dumps({"dataset": "synthetic", "decoding": "generate"}))  # an older game file's name
    assert get_opts(["--game", str(game)]).decoder == "generate"


def test_an_older_runs_opts_json_lends_its_captioner_options_under_their_current_names(tmp_path):
    from egg.zoo.discriminative_captioner.evaluation.models import run_options

    (tmp_path / "opts.json").write_text(json.dumps({"decoding": "generate", "captioner": "clipcap", "cuda": False,
                                                    "device": "cpu", "lr": 1e-7}))  # fmt: skip
    assert run_options(tmp_path / "clipcap.pt") == {"decoder": "generate", "captioner": "clipcap"}


def python_files(*names):
    for name in names:
        path = PACKAGE / name
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported_modules(path):
    """The absolute names of the package's modules that ``path`` imports (relative imports resolved)."""
    package = ["egg", "zoo", "discriminative_captioner"] + list(path.relative_to(PACKAGE).parent.parts)
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def test_no_model_or_method_module_imports_the_option_modules():
    importing = {str(path.relative_to(PACKAGE)): name for path in python_files(*MODEL_AND_METHOD)
                 for name in imported_modules(path) if name.startswith("egg.zoo.discriminative_captioner.options")}
    assert importing == {}


def test_no_option_is_read_with_a_fallback_default():
    """``getattr(opts, NAME, DEFAULT)`` would write a default a second time (the parser holds each one)."""
    found = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path in python_files(".")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr")
             and isinstance(node.args[0], ast.Name) and node.args[0].id == "opts"
             and (len(node.args) == 3 or node.func.id == "hasattr")]  # fmt: skip
    assert found == []


def test_the_top_level_reads_as_an_egg_game_and_no_module_passes_400_lines():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 15, top
    long = {str(path.relative_to(PACKAGE)): n for path in python_files(".")
            if (n := len(path.read_text().splitlines())) > 400}  # fmt: skip
    assert long == {}
