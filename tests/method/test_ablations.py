"""The ablation game files (paper Tables 8, 9 and 13 on the built-in world, ``games/ablations/``): each is the
built-in world's game file with the settings its row names changed, and each is a valid training setting."""

import json
import os

import pytest

from egg.zoo.discriminative_captioner.options.parse import find_game, get_opts

from ..paths import ROOT, load_script

ABLATIONS = os.path.join(ROOT, "games", "ablations")
CHANGES = {  # what each row changes in games/synthetic.json (besides its checkpoint_dir)
    "default": {},
    "no_baseline": {"baseline": "none"},
    "greedy_baseline": {"baseline": "greedy"},
    "greedy_rollouts": {"rollouts": "greedy", "kl_estimator": "exact"},
    "greedy_rollouts_no_baseline": {"rollouts": "greedy", "baseline": "none", "kl_estimator": "exact"},
    "beam_rollouts_greedy_baseline": {"rollouts": "beam", "num_beams": 5, "baseline": "greedy",
                                      "kl_estimator": "exact"},  # fmt: skip
    "reward_accuracy": {"reward": "accuracy"},
    "reward_cosine": {"reward": "cosine"},
    "no_kl": {"kl_coeff": 0.0},
    "authors_kl": {"kl_reference": "language_model", "kl_estimator": "exact"},
    "mean_normalization": {"log_prob_normalization": "mean"},
    "hard_distractors_5": {"hard_distractors": 5},
}


def sweep_module():
    return load_script("games", "ablations", "sweep.py")


def test_the_sweep_runs_every_ablation_game_file():
    files = sorted(name[:-5] for name in os.listdir(ABLATIONS) if name.endswith(".json"))
    assert sorted(sweep_module().ROWS) == files == sorted(CHANGES)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_row_is_the_built_in_game_with_its_own_changes(name):
    with open(os.path.join(ROOT, "games", "synthetic.json")) as f:
        base = json.load(f)
    with open(os.path.join(ABLATIONS, f"{name}.json")) as f:
        row = json.load(f)
    assert row == {**base, **CHANGES[name], "checkpoint_dir": f"runs/ablations/{name}"}
    packaged = find_game(f"ablations/{name}")  # as installed: --game ablations/<name>
    assert os.path.basename(packaged) == f"{name}.json"
    opts = get_opts(["--game", packaged, "--no_cuda"])  # the training options' checks pass
    for key, value in CHANGES[name].items():
        assert getattr(opts, key) == value, key
