"""A SIGTERM at any moment of a run resumes exactly: signals sent at many points of a step, of a
checkpoint write, of a validation and of the final evaluation, each followed by the resume its message prints,
must end bitwise where the straight run ends.  And a run whose training is over resumes to its final evaluation
only, while a complete run is left as it is (exit 0).

Runs are in-process (``train.main``) on the tiny world; the signal is raised in the main thread at the chosen
point, where the run's own handler receives it as it would a scheduler's.
"""

import json
import re
import signal

import pytest
import torch

from egg.zoo.discriminative_captioner import callbacks, train
from egg.zoo.discriminative_captioner.archs import DiscriminativeGame
from egg.zoo.discriminative_captioner.runtime import checkpointing

EPOCHS = ["--n_epochs", "2", "--random_seed", "5", "--checkpoint_every", "1"]
STEP = 15  # a training forward of epoch 2 (12 batches of 50 per epoch), in the middle of the run


def final_line(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"') and '"final"' in line][-1]


@pytest.fixture(scope="module")
def run_args(world_cache):
    return ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--batch_size", "50", "--max_len", "6",
            "--num_beams", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def straight(run_args, tmp_path_factory):
    """The uninterrupted run: its captioner's weights and its final results."""
    run = tmp_path_factory.mktemp("straight") / "run"
    results = train.main(run_args + EPOCHS + ["--checkpoint_dir", str(run)])
    return torch.load(run / "clipcap.pt", weights_only=True), results


class Signaller:
    """Raises SIGTERM the ``at``-th time (0-based) the patched point is reached."""

    def __init__(self, at):
        self.at = at
        self.calls = 0

    def tick(self):
        if self.calls == self.at:
            signal.raise_signal(signal.SIGTERM)
        self.calls += 1


def on_forward(monkeypatch, training, after=False, at=STEP):
    """Signals at a game forward's start (or end) in training or in evaluation."""
    signaller, forward = Signaller(at), DiscriminativeGame.forward

    def patched(self, *args, **kwargs):
        if self.training == training and not after:
            signaller.tick()
        output = forward(self, *args, **kwargs)
        if self.training == training and after:
            signaller.tick()
        return output

    monkeypatch.setattr(DiscriminativeGame, "forward", patched)


def on_optimizer_step(monkeypatch, after):
    """Signals right before (or after) the STEP-th optimizer update."""
    signaller, step = Signaller(STEP), torch.optim.Adam.step

    def patched(self, *args, **kwargs):
        if not after:
            signaller.tick()
        output = step(self, *args, **kwargs)
        if after:
            signaller.tick()
        return output

    monkeypatch.setattr(torch.optim.Adam, "step", patched)


def on_write(monkeypatch, suffix, at=0):
    """Signals as a checkpoint and its resume state start being written (``save_checkpoint_pair``), for the
    ``at``-th file whose name ends in ``suffix``."""
    signaller, write = Signaller(at), callbacks.save_checkpoint_pair

    def patched(checkpoint, state, path):
        if str(path).endswith(suffix):
            signaller.tick()
        return write(checkpoint, state, path)

    monkeypatch.setattr(callbacks, "save_checkpoint_pair", patched)


def between_checkpoint_and_state(monkeypatch, at=STEP):
    """Signals once a checkpoint is written and before its resume state is (the fingerprint taken in between)."""
    signaller, fingerprint = Signaller(at), checkpointing.fingerprint

    def patched(path, *args):
        signaller.tick()
        return fingerprint(path, *args)

    monkeypatch.setattr(checkpointing, "fingerprint", patched)


POINTS = {
    "at a training forward's start": lambda m: on_forward(m, training=True),
    "after a training forward, before backward": lambda m: on_forward(m, training=True, after=True),
    "before the optimizer step": lambda m: on_optimizer_step(m, after=False),
    "after the optimizer step": lambda m: on_optimizer_step(m, after=True),
    "as a mid-epoch checkpoint is written": lambda m: on_write(m, "latest.tar", at=STEP),
    "between a checkpoint and its resume state": between_checkpoint_and_state,
    "as an epoch checkpoint is written": lambda m: on_write(m, "1.tar"),
    "during the epoch-0 validation": lambda m: on_forward(m, training=False, at=1),  # before any update
    "during the epoch-end validation": lambda m: on_forward(m, training=False, at=3),  # 2 sets at epoch 0, then 1
    "during the final test evaluation": lambda m: on_forward(m, training=False, at=7),  # after 3 validations of 2
    "as final.tar is written": lambda m: on_write(m, "final.tar"),
}


@pytest.mark.parametrize("point", POINTS)
def test_a_sigterm_at_any_point_resumes_to_the_straight_runs_end(point, straight, run_args, tmp_path, monkeypatch,
                                                                 capsys):  # fmt: skip
    args = run_args + EPOCHS + ["--checkpoint_dir", str(tmp_path / "run")]
    with monkeypatch.context() as patch:
        POINTS[point](patch)
        with pytest.raises(SystemExit) as stopped:
            train.main(args)
    assert stopped.value.code == 128 + signal.SIGTERM
    message = capsys.readouterr().err.strip().splitlines()[-1]
    checkpoint = re.search(r"--load_from_checkpoint (\S+)", message).group(1)  # the resume the message prints
    assert message.startswith("SIGTERM: ")

    results = train.main(args + ["--load_from_checkpoint", checkpoint])
    weights, straight_results = straight
    resumed = torch.load(tmp_path / "run" / "clipcap.pt", weights_only=True)
    assert resumed.keys() == weights.keys()
    assert all(torch.equal(resumed[key], weights[key]) for key in weights), "weights differ from the straight run"
    assert results == straight_results


def test_a_finished_run_resumes_to_its_final_evaluation_and_a_complete_one_is_left_alone(run_args, tmp_path, capsys):
    run = tmp_path / "run"
    args = run_args + ["--n_epochs", "1", "--checkpoint_dir", str(run)]
    results = train.main(args)
    assert json.loads((run / "final.json").read_text()) == {**results, "epoch": 1}
    capsys.readouterr()

    # A requeued job of a complete run: nothing to do, said once, the same results.
    assert train.main(args + ["--preemptable"]) == results
    out = capsys.readouterr().out
    assert "run complete" in out and not [line for line in out.splitlines() if line.startswith("{")]

    # Training over, final evaluation lost (e.g. a SIGKILL during it): the resume runs that evaluation only.
    (run / "final.json").unlink()
    weights = torch.load(run / "clipcap.pt", weights_only=True)
    assert train.main(args + ["--preemptable"]) == results
    captured = capsys.readouterr()
    assert "running the final test evaluation only" in captured.err
    assert [json.loads(line)["mode"] for line in captured.out.splitlines() if line.startswith("{")] == ["final"]
    assert (run / "final.json").exists()
    resaved = torch.load(run / "clipcap.pt", weights_only=True)
    assert all(torch.equal(resaved[key], weights[key]) for key in weights)
