"""A resume with other options than the checkpoint's is refused in one line naming each change, unless
``--allow_option_change`` lets it through; ``opts.json`` keeps what earlier epochs used and records the change."""

import json
import os

import pytest

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.runtime.errors import UsageError


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, world_cache):
    """A one-epoch run (K = 1, mean baseline) with its checkpoints."""
    directory = tmp_path_factory.mktemp("run") / "base"
    args = ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--n_epochs", "1", "--batch_size", "50",
            "--max_len", "6", "--num_beams", "2", "--validation_freq", "0", "--checkpoint_dir", str(directory)]
    train.main(args)
    return args, directory


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def resume(args, directory, *extra):
    return train.main(args + ["--n_epochs", "2", "--load_from_checkpoint", str(directory / "1.tar"), *extra])


def test_a_resume_with_other_options_is_refused_in_one_line_and_writes_nothing(base_run):
    args, directory = base_run
    before = snapshot(directory)
    with pytest.raises(UsageError) as error:
        resume(args, directory, "--rollouts_per_image", "4", "--baseline", "rloo")
    message = str(error.value)
    assert "\n" not in message
    assert "--baseline mean -> rloo" in message and "--rollouts_per_image 1 -> 4" in message
    assert "--allow_option_change baseline rollouts_per_image" in message
    assert snapshot(directory) == before  # opts.json and the checkpoints untouched
    for change in (["--batch_size", "25"], ["--random_seed", "7"], ["--kl_coeff", "0.5"], ["--max_len", "7"]):
        with pytest.raises(UsageError, match=f"{change[0]} .* -> {change[1]}"):
            resume(args, directory, *change)
    with pytest.raises(UsageError, match="--rollouts_per_image 1 -> 4"):  # one change allowed, the other not
        resume(args, directory, "--rollouts_per_image", "4", "--baseline", "rloo", "--allow_option_change",
               "baseline")  # fmt: skip
    assert snapshot(directory) == before


def test_an_allowed_change_is_recorded_from_the_epoch_it_holds_from(base_run, tmp_path):
    args, directory = base_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(directory):  # a copy of the run, resumed in place
        (copy / name).write_bytes((directory / name).read_bytes())
    original = json.loads((copy / "opts.json").read_text())
    args = [arg if arg != str(directory) else str(copy) for arg in args]
    resume(args, copy, "--kl_coeff", "0.5", "--allow_option_change", "kl_coeff", "--checkpoint_every", "3")
    written = json.loads((copy / "opts.json").read_text())
    assert written["kl_coeff"] == original["kl_coeff"] == 0.2  # what epoch 1 used (the synthetic game's)
    assert written["n_epochs"] == 2 and written["checkpoint_every"] == 3  # how long and how often: the latest
    assert written["option_changes"] == [{"from": {"epoch": 2, "batches_done": 0}, "options": {"kl_coeff": 0.5}}]
    # the new checkpoints hold the new value: resuming them with it needs no permission (nothing is left to do)
    assert resume_quietly(args, copy, "--kl_coeff", "0.5")["acc"] == json.loads((copy / "final.json").read_text())["acc"]


def resume_quietly(args, directory, *extra):
    """Resumes the final checkpoint of a finished two-epoch run: nothing is left to do."""
    return train.main(args + ["--n_epochs", "2", "--load_from_checkpoint", str(directory / "final.tar"), *extra])


def test_how_long_where_and_in_how_much_memory_may_change(base_run, tmp_path):
    args, directory = base_run
    new = tmp_path / "elsewhere"
    args = [arg if arg != str(directory) else str(new) for arg in args]
    results = resume(args, directory, "--micro_batch_size", "10", "--num_workers", "0", "--checkpoint_every", "5",
                     "--decoder", "generate")  # fmt: skip
    assert 0 <= results["acc"] <= 1
    assert "option_changes" not in json.loads((new / "opts.json").read_text())


def test_a_preemptable_restart_with_other_options_is_refused(base_run):
    args, directory = base_run
    with pytest.raises(UsageError, match="--baseline mean -> none"):
        train.main(args + ["--n_epochs", "2", "--preemptable", "--baseline", "none"])


def test_a_checkpoint_without_its_options_resumes_saying_they_are_not_compared(base_run, tmp_path, capsys):
    import torch

    from egg.zoo.discriminative_captioner.runtime.checkpointing import resume_state_path

    args, directory = base_run
    copy = tmp_path / "older"
    copy.mkdir()
    for name in os.listdir(directory):
        (copy / name).write_bytes((directory / name).read_bytes())
    state_path = resume_state_path(str(copy / "1.tar"))
    state = torch.load(state_path, weights_only=True)
    del state["options"]  # as checkpoints were written before they held their options
    torch.save(state, state_path)
    args = [arg if arg != str(directory) else str(copy) for arg in args]
    results = resume(args, copy, "--kl_coeff", "0.5")
    assert 0 <= results["acc"] <= 1
    assert "does not record the options it was written with" in capsys.readouterr().err
