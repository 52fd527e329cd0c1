"""``train`` through the command line in a subprocess: a run to its end, and a run stopped by SIGTERM in the middle
of its first epoch, for the tests that compare a resumed run with a straight one."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

TRAIN = [sys.executable, "-m", "egg.zoo.discriminative_captioner.train"]


def final_line(stdout):
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert lines[-1]["mode"] == "final", stdout[-2000:]
    return lines[-1]


def run(args, env, cwd):
    done = subprocess.run(TRAIN + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def interrupt_mid_epoch(args, run_dir, env, cwd):
    """Starts a run that checkpoints every update, sends SIGTERM once its first checkpoint exists."""
    process = subprocess.Popen(TRAIN + args + ["--checkpoint_every", "1"], env=env, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 900
    while not os.path.exists(run_dir / "latest.resume.pt"):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=900)
    return process.returncode, stdout, stderr


def captioner_state(run_dir):
    return torch.load(run_dir / "clipcap.pt", map_location="cpu", weights_only=True)
