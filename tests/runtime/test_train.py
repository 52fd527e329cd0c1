"""Runs through ``main`` on the tiny synthetic world: console logs, checkpoints, resuming, bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from egg.zoo.discriminative_captioner import experiment, train
from egg.zoo.discriminative_captioner.core import Checkpoint, core
from egg.zoo.discriminative_captioner.games import build_game, build_optimizer
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.errors import UsageError


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_epoch_logs_epoch_zero_then_each_epoch_and_saves_checkpoints(tiny_run_args, tmp_path, capsys):
    run = tmp_path / "run"
    results = train.main(tiny_run_args + ["--checkpoint_dir", str(run), "--checkpoint_freq", "1"])
    lines = json_lines(capsys.readouterr().out)
    modes = [(line["mode"], line.get("epoch")) for line in lines]
    assert modes == [("test", 0), ("train", 1), ("test", 1), ("final", 1)]
    assert [line.get("split") for line in lines] == ["validation", None, "validation", "test"]
    for line in lines:
        assert {"loss", "acc", "reward", "mode", "epoch"} <= set(line)
    assert 0 <= results["acc"] <= 1
    assert sorted(os.listdir(run)) == [
        "1.resume.pt", "1.tar", "README.md", "captions", "clipcap.pt", "data_counts.json", "final.json",
        "final.resume.pt", "final.tar", "log.jsonl", "opts.json",
    ]  # fmt: skip
    assert sorted(os.listdir(run / "captions")) == ["epoch_0.jsonl", "epoch_1.jsonl"]  # the validations' tables
    mask = os.umask(0)
    os.umask(mask)
    files = [name for name in os.listdir(run) if os.path.isfile(run / name)]
    assert {name: os.stat(run / name).st_mode & 0o777 for name in files} == dict.fromkeys(
        files, 0o666 & ~mask
    )  # created as open() would, not private as tempfile makes them
    saved = json.loads((run / "opts.json").read_text())
    assert saved["n_epochs"] == 1 and saved["dataset"] == "synthetic" and saved["kl_coeff"] == 0.2


def test_resuming_restores_parameters_and_optimizer_state(tiny_run_args, tmp_path, capsys):
    run = tmp_path / "run"
    train.main(tiny_run_args + ["--checkpoint_dir", str(run), "--checkpoint_freq", "1"])
    saved = torch.load(run / "1.tar", weights_only=True)
    assert saved.epoch == 1

    opts = get_opts(tiny_run_args + ["--load_from_checkpoint", str(run / "1.tar"), "--n_epochs", "2"])
    from egg.zoo.discriminative_captioner.experiment import build_experiment

    experiment = build_experiment(opts)
    game = build_game(opts, experiment.captioner, experiment.retriever)
    optimizer = build_optimizer(opts, game)
    trainer = core.Trainer(game=game, optimizer=optimizer, train_data=[])
    assert trainer.start_epoch == 1
    for key, value in saved.model_state_dict.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(game.state_dict()[key], value), key
    resumed = optimizer.state_dict()
    for index, state in saved.optimizer_state_dict["state"].items():
        for name, value in state.items():
            assert torch.equal(resumed["state"][index][name], value), (index, name)

    capsys.readouterr()
    train.main(tiny_run_args + ["--checkpoint_dir", str(run), "--load_from_checkpoint", str(run / "1.tar"),
                                "--n_epochs", "2"])  # fmt: skip
    epochs = [(line["mode"], line["epoch"]) for line in json_lines(capsys.readouterr().out)]
    assert epochs == [("train", 2), ("test", 2), ("final", 2)]  # no epoch-0 validation when resuming


def test_the_optimizer_holds_only_the_captioners_trainable_parameters(tiny_run_args):
    from egg.zoo.discriminative_captioner.experiment import build_experiment

    opts = get_opts(tiny_run_args)
    experiment = build_experiment(opts)
    game = build_game(opts, experiment.captioner, experiment.retriever)
    optimized = {id(p) for group in build_optimizer(opts, game).param_groups for p in group["params"]}
    assert optimized == {id(p) for p in experiment.captioner.model.parameters()}
    frozen = list(experiment.retriever.parameters()) + list(game.kl_reference.parameters())
    assert not optimized & {id(p) for p in frozen}


def test_adam_is_torchs_fused_adam_with_egg_s_learning_rate_and_the_same_update(tiny_run_args):
    from egg.zoo.discriminative_captioner.experiment import build_experiment

    opts = get_opts(tiny_run_args + ["--optimizer", "adam", "--lr", "0.01"])
    experiment = build_experiment(opts)
    optimizer = build_optimizer(opts, build_game(opts, experiment.captioner, experiment.retriever))
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] and optimizer.defaults["lr"] == 0.01
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    copies = [p.detach().clone().requires_grad_() for p in parameters]
    reference = torch.optim.Adam(copies, lr=0.01)  # what EGG's build_optimizer makes
    for _ in range(3):
        for p, q in zip(parameters, copies):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for p, q in zip(parameters, copies):
        torch.testing.assert_close(p, q)


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Makes loading the data set and models fail: what a test runs must be refused before it."""

    def refuse(opts):
        raise AssertionError("heavy work started")

    monkeypatch.setattr(experiment, "build_experiment", refuse)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch_size", "1"], "leaves no distractors"),
        (["--load_from_checkpoint", "/nonexistent/final.tar"], "checkpoint not found"),
        (["--game", "no_such_experiment"], "no game file"),
        (["--checkpoint_dir", "/proc/forbidden"], "cannot write to --checkpoint_dir /proc/forbidden"),
        (["--preemptable"], "--preemptable resumes from the newest checkpoint in --checkpoint_dir"),
        (["--n_epochs", "-1"], "--n_epochs must be at least 1"),
    ],
)
def test_bad_options_raise_usage_errors_before_heavy_work(tiny_run_args, no_heavy_work, extra, message):
    with pytest.raises(UsageError, match=message):
        train.main(tiny_run_args + extra)


def previous_run(directory):
    """A finished run's files (its final.tar truncated: nothing reads it whole)."""
    directory.mkdir()
    (directory / "opts.json").write_text('{"previous": true}')
    (directory / "final.tar").write_bytes(b"PK\x03\x04 truncated")
    (directory / "clipcap.pt").write_bytes(b"weights")
    return directory


def test_a_run_never_replaces_another_runs_results(tiny_run_args, tmp_path, no_heavy_work):
    run = previous_run(tmp_path / "run")
    with pytest.raises(UsageError, match="holds another run .*--overwrite"):
        train.main(tiny_run_args + ["--checkpoint_dir", str(run)])
    not_a_checkpoint = "cannot resume from .*final.tar: it is a PyTorch file but not an EGG checkpoint"
    with pytest.raises(UsageError, match=not_a_checkpoint):
        train.main(tiny_run_args + ["--checkpoint_dir", str(run), "--load_from_checkpoint", str(run / "final.tar")])
    assert (run / "opts.json").read_text() == '{"previous": true}' and (run / "clipcap.pt").read_bytes() == b"weights"
    with pytest.raises(AssertionError, match="heavy work started"):  # told to: it goes ahead
        train.main(tiny_run_args + ["--checkpoint_dir", str(run), "--overwrite"])


def test_resuming_needs_no_more_epochs_than_asked(tiny_run_args, tmp_path, no_heavy_work):
    run = tmp_path / "run"
    run.mkdir()
    torch.save(Checkpoint(epoch=2, model_state_dict={}, optimizer_state_dict={}, optimizer_scheduler_state_dict=None),
               run / "2.tar")  # fmt: skip
    with pytest.raises(UsageError, match="has trained 2 epochs, more than --n_epochs 1: resume it with --n_epochs 2"):
        train.main(tiny_run_args + ["--load_from_checkpoint", str(run / "2.tar"), "--n_epochs", "1"])
    with pytest.raises(AssertionError, match="heavy work started"):  # all epochs trained: the final evaluation
        train.main(tiny_run_args + ["--load_from_checkpoint", str(run / "2.tar"), "--n_epochs", "2"])


def test_validation_freq_zero_also_skips_the_epoch_zero_validation(tiny_run_args, capsys):
    train.main(tiny_run_args + ["--validation_freq", "0"])
    modes = [line["mode"] for line in json_lines(capsys.readouterr().out)]
    assert modes == ["train", "final"]


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "egg.zoo.discriminative_captioner.train", *args],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_command_line_errors_are_one_line_with_a_nonzero_exit(tiny_run_args, world_cache, tmp_path):
    unknown = run_cli("--dataset", "imagenet")
    assert unknown.returncode != 0
    assert unknown.stderr.strip().count("\n") == 0 and "invalid choice: 'imagenet'" in unknown.stderr

    # a corrupted copy of the session's world (rebuilding the world itself would cost a build)
    directory = next(entry.path for entry in os.scandir(world_cache) if entry.name.startswith("synthetic-"))
    copy = tmp_path / os.path.basename(directory)
    shutil.copytree(directory, copy)
    with open(copy / "captioner.pt", "r+b") as f:
        f.write(b"garbage")
    corrupted = run_cli(*tiny_run_args, "--cache_dir", str(tmp_path))  # the last --cache_dir wins
    assert corrupted.returncode != 0
    assert corrupted.stderr.strip().splitlines()[-1].startswith("error: synthetic world cache")
    assert "Traceback" not in corrupted.stderr and "--rebuild" in corrupted.stderr
