"""Options: game files under the command line, and a helpful --help."""

import json

import pytest

from egg.zoo.discriminative_captioner.errors import UsageError
from egg.zoo.discriminative_captioner.opts import get_opts


def game_file(tmp_path, values):
    path = tmp_path / "game.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_the_command_line_overrides_the_game_file_which_overrides_the_defaults(tmp_path):
    game = game_file(tmp_path, {"lr": 0.5, "n_epochs": 7, "kl_coeff": 0.3, "greedy_rollouts": True})
    opts = get_opts(["--game", game, "--n_epochs", "2"])
    assert (opts.lr, opts.n_epochs, opts.kl_coeff, opts.greedy_rollouts) == (0.5, 2, 0.3, True)
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
    assert "(default: logprob)" in text and "running-mean baseline irrelevant" in text


class World:
    """A data set with its own captioner and retriever files."""

    def model_defaults(self, opts):
        return {"clip_model": "world.pt", "captioner_clip_model": "world.pt", "clipcap_checkpoint": "cap.pt",
                "language_model": "lm"}  # fmt: skip


def test_a_data_sets_own_models_fill_unset_options_model_by_model():
    from egg.zoo.discriminative_captioner.opts import apply_model_defaults

    opts = apply_model_defaults(get_opts([]), World())
    assert (opts.clip_model, opts.clipcap_checkpoint, opts.language_model) == ("world.pt", "cap.pt", "lm")
    # a released ClipCap file comes with the released GPT-2 and CLIP, not the data set's tiny ones
    opts = apply_model_defaults(get_opts(["--clipcap_checkpoint", "coco_weights.pt"]), World())
    assert (opts.language_model, opts.captioner_clip_model, opts.clip_model) == ("gpt2", "ViT-B/32", "world.pt")
    opts = apply_model_defaults(get_opts(["--clip_backend", "transformers", "--clip_model", "x"]), World())
    assert opts.clip_model == "x" and opts.clipcap_checkpoint == "cap.pt"
