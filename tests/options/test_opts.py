"""Options: game files under the command line, and a helpful --help."""

import json

import pytest

from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.errors import UsageError


def game_file(tmp_path, values):
    path = tmp_path / "game.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_the_command_line_overrides_the_game_file_which_overrides_the_defaults(tmp_path):
    game = game_file(tmp_path, {"lr": 0.5, "n_epochs": 7, "kl_coeff": 0.3, "kl_estimator": "exact",
                                "greedy_rollouts": True})  # fmt: skip
    opts = get_opts(["--game", game, "--n_epochs", "2"])
    assert (opts.lr, opts.n_epochs, opts.kl_coeff, opts.greedy_rollouts) == (0.5, 2, 0.3, True)
    assert opts.rollouts == "greedy"
    assert opts.baseline == "mean" and opts.game == game


def test_the_default_game_is_the_datasets_own():
    opts = get_opts([])
    assert opts.game.endswith("synthetic.json") and opts.dataset == "synthetic" and opts.batch_size == 100


def test_game_files_with_unknown_options_are_rejected(tmp_path):
    with pytest.raises(UsageError, match="unknown options: learning_rate"):
        get_opts(["--game", game_file(tmp_path, {"learning_rate": 1})])


def test_help_lists_every_model_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        get_opts(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--clip_model", "--clipcap_checkpoint", "--language_model", "--reward", "--baseline",
                   "--standardize_advantage", "--retriever_precision", "--lr", "--n_epochs"):  # fmt: skip
        assert option in text
    assert "(default: logprob, from the game file synthetic.json)" in text
    assert "running-mean baseline irrelevant" in text


# a data set's own captioner and retriever files (its model_defaults)
WORLD = {"clip_model": "world.pt", "captioner_clip_model": "world.pt", "clipcap_checkpoint": "cap.pt",
         "language_model": "lm"}


def test_a_data_sets_own_models_fill_unset_options_model_by_model():
    opts = get_opts([]).with_model_defaults(WORLD)
    assert (opts.clip_model, opts.clipcap_checkpoint, opts.language_model) == ("world.pt", "cap.pt", "lm")
    # a released ClipCap file comes with the released GPT-2 and CLIP, not the data set's tiny ones
    opts = get_opts(["--clipcap_checkpoint", "coco_weights.pt"]).with_model_defaults(WORLD)
    assert (opts.language_model, opts.captioner_clip_model, opts.clip_model) == ("gpt2", "ViT-B/32", "world.pt")
    opts = get_opts(["--clip_backend", "transformers", "--clip_model", "x"]).with_model_defaults(WORLD)
    assert opts.clip_model == "x" and opts.clipcap_checkpoint == "cap.pt"


def test_a_game_file_that_omits_a_key_gets_the_paper_settings_not_eggs(tmp_path):
    opts = get_opts(["--game", game_file(tmp_path, {"dataset": "synthetic"})])
    assert (opts.max_len, opts.lr, opts.optimizer, opts.batch_size, opts.n_epochs) == (40, 1e-7, "adam", 100, 2)
    assert opts.num_beams == 5


def test_a_flag_a_game_file_sets_can_be_switched_off(tmp_path):
    game = game_file(tmp_path, {"greedy_rollouts": True, "standardize_advantage": True, "fp16": True})
    opts = get_opts(["--game", game])
    assert opts.greedy_rollouts and opts.standardize_advantage and opts.fp16
    opts = get_opts(["--game", game, "--no-greedy_rollouts", "--no-standardize_advantage", "--no-fp16"])
    assert not (opts.greedy_rollouts or opts.standardize_advantage or opts.fp16)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"reward": "logprobs"}, "'logprobs' is not one of"),
        ({"n_epochs": "two"}, "invalid value 'two'"),
        ({"greedy_rollouts": "yes"}, "must be true or false"),
    ],
)
def test_game_file_values_are_checked_like_the_command_line(tmp_path, values, message):
    with pytest.raises(UsageError, match=message):
        get_opts(["--game", game_file(tmp_path, values)])


@pytest.mark.parametrize(
    "params, message",
    [
        (["--n_epochs", "-1"], "--n_epochs must be at least 1"),
        (["--reward_temperature", "0"], "--reward_temperature must be positive"),
        (["--optimizer", "foo"], "--optimizer 'foo' is not one of adam, sgd, adagrad"),
        (["--update_freq", "0"], "--update_freq must be at least 1"),
        (["--lr", "0"], "--lr must be positive"),
        (["--checkpoint_every", "-5"], "--checkpoint_every must be at least 0"),
        (["--greedy_rollouts", "--baseline", "greedy"], "advantage of exactly zero"),
    ],
)
def test_impossible_options_are_one_line_usage_errors(params, message):
    with pytest.raises(UsageError, match=message):
        get_opts(params)


def help_text(capsys, **kwargs):
    with pytest.raises(SystemExit) as exit_info:
        get_opts(["--help"], **kwargs)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_shows_each_value_once_with_its_source_and_groups_eggs_options(capsys):
    text = help_text(capsys)
    flat = " ".join(text.split())
    assert "--max_len MAX_LEN maximum caption length in tokens" in flat
    assert "(default: 40, from the game file synthetic.json)" in flat
    assert "(default: adam, from the paper's settings)" in flat
    options = [chunk for chunk in flat.split(" --") if chunk]
    assert all(chunk.count("(default:") <= 1 for chunk in options), [c for c in options if c.count("(default:") > 1]
    assert "--vocab_size" not in text  # EGG's, unused by this game
    egg_group = text.split("EGG (common options")[1]
    assert "--n_epochs" in egg_group and "--lr" in egg_group and "--reward " not in egg_group


def test_evaluate_help_leaves_out_training_options(capsys):
    text = help_text(capsys, command="evaluate")
    for option in ("--lr", "--n_epochs", "--baseline", "--kl_coeff", "--checkpoint_every", "--greedy_rollouts"):
        assert option not in text
    for option in ("--load_from_checkpoint", "--max_len", "--num_beams", "--clip_model"):
        assert option in text
