"""Callbacks on both cores: the epoch-0 validation's order, upstream callbacks, progress lines, checkpoint files."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egg.zoo.discriminative_captioner.callbacks import ProgressBar
from egg.zoo.discriminative_captioner.core import MeanBaseline, core

from .. import reuse_example
from ..egg_layouts import EGG_SOURCES, egg_tree
from ..paths import ROOT

EXPECTED_EVENTS = [
    ["train_begin"],
    ["validation_begin", 0],  # after every on_train_begin, with a validation_begin like any validation
    ["validation_end", 0],
    ["epoch_begin", 1],
    ["epoch_end", 1],
    ["validation_begin", 1],
    ["validation_end", 1],
    ["early_stopping", 1],  # EarlyStopperAccuracy (threshold 0) decided at epoch 0; the Trainer stops after epoch 1
    ["train_end"],
]


def event_names(events):
    return [event[:2] for event in events]  # validation_end also carries the logged aux keys


def test_epoch_zero_validation_comes_after_train_begin_and_early_stopping_works(tmp_path):
    recorder = reuse_example.main(str(tmp_path))
    assert event_names(recorder.events) == EXPECTED_EVENTS
    assert "acc" in recorder.events[2][2] and "reward" in recorder.events[2][2]
    saved = tmp_path / "interactions"
    assert (saved / "train" / "epoch_1" / "interaction_gpu0").exists()  # InteractionSaver, upstream layout
    assert (saved / "validation" / "epoch_1" / "interaction_gpu0").exists()
    logs = torch.load(saved / "validation" / "epoch_1" / "interaction_gpu0", weights_only=False)
    assert logs.aux["acc"].shape == (16,)


@pytest.mark.parametrize(
    "egg_source",
    [pytest.param(p.values[0], id=p.id, marks=p.marks) for p in EGG_SOURCES if p.id == "EGG_SOURCE"],
)
def test_upstream_callbacks_work_with_this_game_on_facebookresearch_egg(egg_source, tmp_path):
    root = egg_tree(tmp_path / "site", egg_source)
    shutil_tests = tmp_path / "tests"
    shutil_tests.mkdir()
    for name in ("__init__.py", "tiny_models.py", "reuse_example.py"):
        (shutil_tests / name).write_text((Path(ROOT) / "tests" / name).read_text())
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{tmp_path}", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "tests.reuse_example", str(tmp_path / "out")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    tensorboard = [event for event in events if event[0] == "tensorboard"]
    assert event_names([event for event in events if event[0] != "tensorboard"]) == EXPECTED_EVENTS
    assert "test/acc" in tensorboard[0][1] and "train/reward" in tensorboard[0][1]  # TensorboardLogger
    assert (tmp_path / "out" / "interactions" / "validation" / "epoch_1" / "interaction_gpu0").exists()


def test_progress_lines_when_stderr_is_not_a_terminal():
    stream = io.StringIO()  # not a terminal
    bar = ProgressBar(n_batches=3, interval=0.0, file=stream)
    bar.on_epoch_begin(2)
    logs = core.Interaction(None, None, None, None, None, None, None, {"acc": torch.tensor([0.5, 1.0])})
    for batch_id in range(3):
        bar.on_batch_end(logs, torch.tensor(0.0), batch_id)
    bar.on_batch_end(logs, torch.tensor(0.0), 0, is_training=False)  # validation batches are not counted
    bar.on_epoch_end(0.0, logs, 2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("epoch 2: batch 3/3, acc 0.750, ")


def test_the_reuse_contracts_hold(clipcap, retriever):
    generator = torch.Generator().manual_seed(0)
    embeddings = retriever.encode_images(torch.rand(8, 3, 32, 32, generator=generator))
    sender_input, labels, receiver_input, aux_input = reuse_example.user_batches(
        torch.randn(8, 32, generator=generator), embeddings, batch_size=4
    )[1]
    assert labels.dtype == torch.int64 and aux_input["image_index"].tolist() == [4, 5, 6, 7]
    game = reuse_example.build_game(clipcap, retriever).train()
    rollout = game.sender(sender_input)
    assert rollout.message.dtype == torch.int64 and rollout.message.shape[0] == 4
    assert rollout.log_prob.dtype == torch.float32 and rollout.log_prob.shape == (4,) and rollout.log_prob.requires_grad
    assert rollout.entropy.shape == rollout.length.shape == (4,) and rollout.length.dtype == torch.float32
    assert isinstance(rollout.text, list) and all(isinstance(text, str) for text in rollout.text)
    scores = game.receiver(rollout.text, receiver_input)
    assert scores.shape == (4, 4) and scores.dtype == torch.float32
    loss, interaction = game(sender_input, labels, receiver_input, aux_input)
    assert loss.dim() == 0 and interaction.aux["acc"].shape == interaction.aux["reward"].shape == (4,)


class InPlaceMeanBaseline(MeanBaseline):
    """facebookresearch EGG's MeanBaseline, which updates the tensor its predict() returned, in place."""

    def update(self, loss):
        self.n_points += 1
        self.mean_baseline += (loss.detach().mean().item() - self.mean_baseline) / self.n_points


@pytest.mark.parametrize("baseline_type", [MeanBaseline, InPlaceMeanBaseline], ids=["bundled", "upstream"])
def test_the_logged_baseline_is_the_one_subtracted_on_both_cores(clipcap, retriever, baseline_type):
    game = reuse_example.build_game(clipcap, retriever)
    game.baseline_type = baseline_type
    game.baselines.clear()  # built again from baseline_type
    game.train()
    embeddings = retriever.encode_images(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    batches = reuse_example.user_batches(torch.randn(8, 32), embeddings, batch_size=4)
    _, first = game(*batches[0])
    _, second = game(*batches[1])
    assert first.aux["baseline"].tolist() == [0.0]  # nothing seen before the first batch
    assert second.aux["baseline"].item() == pytest.approx(first.aux["reward"].neg().mean().item(), rel=1e-5)
