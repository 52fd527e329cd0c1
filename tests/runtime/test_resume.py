"""Exact resume: a run interrupted by SIGTERM in the middle of an epoch and resumed ends where a straight run ends.

Both runs go through the command line in subprocesses, on the bundled core and, when ``EGG_SOURCE`` names an
EGG checkout, on facebookresearch EGG (the plugin placed inside EGG's ``egg/zoo/``, as installing it there does).
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from ..egg_layouts import EGG_SOURCES, egg_tree
from ..train_runs import captioner_state, final_line, interrupt_mid_epoch, run

# Each core; and, on the bundled one, hard distractors (their neighbour table is read back from the feature cache)
CASES = [pytest.param(*source.values, [], marks=source.marks, id=source.id) for source in EGG_SOURCES]
CASES.append(pytest.param(None, ["--hard_distractors", "3"], id="hard-distractors"))
# and K rollouts per image with the leave-one-out baseline (each image's K draws come from the resumed stream)
CASES.append(pytest.param(None, ["--rollouts_per_image", "4", "--baseline", "rloo"], id="rollouts-per-image-4"))
# and, on each core (their Trainers run the backward, the clipping and the scheduler), in micro-batches (the
# backward recomputes the scoring passes: no random numbers are drawn there), and with a learning-rate schedule
# restored from the checkpoint, and clipping
for name, options in (("micro-batches", ["--micro_batch_size", "7", "--kl_coeff", "0.1"]),
                      ("schedule", ["--lr_scheduler", "cosine", "--warmup_steps", "3", "--max_grad_norm", "0.5"])):
    CASES += [pytest.param(*source.values, options, marks=source.marks, id=f"{name}-{source.id}")
              for source in EGG_SOURCES]  # fmt: skip


@pytest.mark.parametrize("egg_source, options", CASES)
def test_a_run_interrupted_mid_epoch_and_resumed_matches_a_straight_run(egg_source, options, tiny_run_args,
                                                                        tmp_path):  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if egg_source:
        env["PYTHONPATH"] = str(egg_tree(tmp_path / "site", egg_source))
        using = subprocess.run([sys.executable, "-c", "import egg.zoo.discriminative_captioner.core as c; "
                                "print(c.USING_EGG)"], env=env, capture_output=True, text=True)  # fmt: skip
        assert using.stdout.strip() == "True", using.stderr[-2000:]  # not the bundled core as a fallback
    args = tiny_run_args + ["--n_epochs", "2", "--random_seed", "3"] + options
    straight_dir, interrupted_dir = tmp_path / "straight", tmp_path / "interrupted"
    straight = run(args + ["--checkpoint_dir", str(straight_dir)], env, tmp_path)

    code, _, stderr = interrupt_mid_epoch(args + ["--checkpoint_dir", str(interrupted_dir)], interrupted_dir,
                                          env, tmp_path)  # fmt: skip
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    message = stderr.strip().splitlines()[-1]
    latest = interrupted_dir / "latest.tar"
    assert message.startswith(f"SIGTERM: checkpoint written to {latest}; resume with: python -m ")
    assert message.endswith(f"--load_from_checkpoint {latest}")
    state = torch.load(interrupted_dir / "latest.resume.pt", weights_only=True)
    assert state["epoch"] == 1 and 0 < state["batches_done"] < 12  # in the middle of epoch 1 (12 batches)
    assert not (interrupted_dir / "final.tar").exists()

    resumed = run(args + ["--checkpoint_dir", str(interrupted_dir), "--load_from_checkpoint", str(latest)], env,
                  tmp_path)  # fmt: skip
    lines = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    modes = [(line["mode"], line["epoch"]) for line in lines]
    assert modes == [("train", 1), ("test", 1), ("train", 2), ("test", 2), ("final", 2)]

    expected, actual = captioner_state(straight_dir), captioner_state(interrupted_dir)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key  # bitwise
    assert final_line(resumed.stdout) == final_line(straight.stdout)
    train_lines = [line for line in straight.stdout.splitlines() if '"mode": "train", "epoch": 2' in line]
    assert train_lines and train_lines[0] in resumed.stdout  # the whole of epoch 2 is the same epoch
