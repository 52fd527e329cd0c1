"""One writer per directory: two runs into one --checkpoint_dir, two builds of one feature cache, stale locks.

The cache builds run this file as a script (``python -m tests.runtime.test_locks DIR [--slow]``): a build of the
tiny cache of ``tests/tiny_cache.py`` (the slow one sleeps in its encoder, so that a test can stop or kill it
while it holds the lock), which prints the sha256 of the features it reads.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from egg.zoo.discriminative_captioner import experiment, train
from egg.zoo.discriminative_captioner.data.feature_cache_build import build_cache
from egg.zoo.discriminative_captioner.runtime import locks
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..paths import ROOT
from ..tiny_cache import BATCH_SIZE, KEY, SPLIT, build, files_of, linear_encoder, to_pixels

TRAIN = [sys.executable, "-m", "egg.zoo.discriminative_captioner.train"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
DEADLINE = 300  # seconds a test waits for a subprocess to reach a point


def wait_until(condition, process, what):
    """Polls ``condition()`` while ``process`` runs; fails if it ends first or after ``DEADLINE`` s."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            raise AssertionError(f"the process ended before {what}: {(stdout or '')[-1500:]} {(stderr or '')[-1500:]}")
        assert time.monotonic() < deadline, f"no {what} after {DEADLINE} s"
        time.sleep(0.01)


def owner_pid(path):
    """The PID a lock file records, None while there is none."""
    try:
        with open(path) as f:
            return json.load(f)["pid"]
    except (OSError, ValueError, KeyError):
        return None


def dead_pid():
    """The PID of a process that has ended (and was reaped)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def write_lock(path, **owner):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"host": locks.HOST, "pid": dead_pid(), "since": "2024-01-01 00:00:00", **owner}, f)


# --- run directories ---------------------------------------------------------------------------------------------


def test_a_second_run_into_the_same_checkpoint_dir_is_refused_in_one_line_naming_the_first(tiny_run_args, tmp_path):
    run = tmp_path / "run"
    args = tiny_run_args + ["--checkpoint_dir", str(run)]
    first = subprocess.Popen(TRAIN + args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: owner_pid(run / ".lock") == first.pid, first, "lock held by the first run")
        first.send_signal(signal.SIGSTOP)  # it holds the lock for as long as the second one takes
        second = subprocess.run(TRAIN + args, env=ENV, capture_output=True, text=True, timeout=DEADLINE)
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=DEADLINE)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    message = second.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: --checkpoint_dir {run} is in use by PID {first.pid} on host {locks.HOST}")
    assert "choose another --checkpoint_dir" in message and "{" not in second.stdout  # refused before training
    assert first.returncode == 0, stderr[-3000:]
    assert (run / "final.tar").exists() and not (run / ".lock").exists()  # released at the end of the run


def test_a_run_refused_by_a_held_lock_does_no_heavy_work(tiny_run_args, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(experiment, "build_experiment", lambda opts: pytest.fail("heavy work started"))
    with locks.acquire(str(run / ".lock"), "a test"):
        with pytest.raises(UsageError, match=f"is in use by PID {os.getpid()} on host"):
            train.main(tiny_run_args + ["--checkpoint_dir", str(run)])
    assert os.listdir(run) == []  # the holder's release removed its lock file; the refused run left nothing


def test_a_killed_preemptable_run_leaves_a_stale_lock_that_its_requeued_run_takes_over(tiny_run_args, tmp_path):
    run = tmp_path / "run"
    args = tiny_run_args + ["--checkpoint_dir", str(run), "--preemptable", "--n_epochs", "2"]
    killed = subprocess.Popen(TRAIN + args + ["--checkpoint_every", "1"], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until(lambda: (run / "latest.resume.pt").exists(), killed, "a mid-epoch checkpoint")
    finally:
        killed.kill()  # SIGKILL: nothing is released
        killed.communicate()
    assert owner_pid(run / ".lock") == killed.pid

    requeued = subprocess.run(TRAIN + args, env=ENV, capture_output=True, text=True, timeout=DEADLINE)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    taken = [line for line in requeued.stderr.splitlines() if "taking over" in line]
    assert len(taken) == 1, requeued.stderr[-3000:]
    assert taken[0].startswith(f"--checkpoint_dir {run}: taking over the lock of PID {killed.pid} on host {locks.HOST}")
    assert taken[0].endswith("which has ended without releasing it")
    assert json.loads(requeued.stdout.strip().splitlines()[-2])["mode"] == "final"  # resumed and finished
    assert not (run / ".lock").exists()


@pytest.mark.parametrize("failure", [UsageError("the data set is broken"), KeyboardInterrupt(), SystemExit(143)])
def test_a_failed_run_releases_its_lock_and_removes_the_directory_it_made(tiny_run_args, tmp_path, monkeypatch,
                                                                          failure):  # fmt: skip
    run = tmp_path / "runs" / "run"
    held = []

    def fail(opts):
        held.append(owner_pid(run / ".lock"))
        raise failure

    monkeypatch.setattr(experiment, "build_experiment", fail)
    with pytest.raises(type(failure)):
        train.main(tiny_run_args + ["--checkpoint_dir", str(run)])
    assert held == [os.getpid()]  # the run held the lock while loading
    assert not (tmp_path / "runs").exists()  # a failed run leaves no empty folder (SIGTERM's exit is a SystemExit)
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(type(failure)):
        train.main(tiny_run_args + ["--checkpoint_dir", str(run)])
    assert os.listdir(run) == ["notes.txt"]  # a directory that was there stays, without the lock


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tiny_run_args, tmp_path, monkeypatch):
    run = tmp_path / "run"
    write_lock(str(run / ".lock"), host="node-elsewhere", pid=4242)
    monkeypatch.setattr(experiment, "build_experiment", lambda opts: pytest.fail("heavy work started"))
    with pytest.raises(UsageError) as error:
        train.main(tiny_run_args + ["--checkpoint_dir", str(run)])
    assert str(error.value) == (
        f"--checkpoint_dir {run} is in use by PID 4242 on host node-elsewhere (since 2024-01-01 00:00:00), which "
        f"cannot be checked from host {locks.HOST}: if that process no longer runs, remove {run / '.lock'} and rerun"
    )
    assert owner_pid(run / ".lock") == 4242  # left alone


def test_a_lock_left_on_another_host_by_this_slurm_job_before_its_requeue_is_taken_over(tmp_path, monkeypatch,
                                                                                       capsys):  # fmt: skip
    path = str(tmp_path / "run" / ".lock")
    write_lock(path, host="node-elsewhere", pid=4242, slurm_job="77", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # another job: cannot be checked
    with pytest.raises(locks.LockHeld, match="node-elsewhere"):
        locks.acquire(path, "the run")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job, requeued
    with locks.acquire(path, "the run"):
        assert owner_pid(path) == os.getpid()
    assert "the run: taking over the lock of PID 4242 on host node-elsewhere" in capsys.readouterr().err
    assert not os.path.exists(path)


# --- feature caches ------------------------------------------------------------------------------------------------


def start_build(directory, out, slow=True):
    """A cache build in a subprocess; its stdout and stderr go to ``out``.{out,err}."""
    command = [sys.executable, "-m", "tests.runtime.test_locks", str(directory)] + (["--slow"] if slow else [])
    with open(f"{out}.out", "w") as stdout, open(f"{out}.err", "w") as stderr:
        return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=stdout, stderr=stderr)


def read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def reference(tmp_path):
    """The files of the tiny cache built in one go."""
    build(str(tmp_path / "whole"))
    return files_of(tmp_path / "whole")


def test_a_second_build_of_the_same_cache_waits_for_the_first_and_reads_its_cache(tmp_path, reference):
    cache, lock = tmp_path / "cache", tmp_path / "cache.lock"
    first = start_build(cache, tmp_path / "first")
    try:
        wait_until(lambda: owner_pid(lock) == first.pid, first, "lock held by the first build")
        first.send_signal(signal.SIGSTOP)
        second = start_build(cache, tmp_path / "second", slow=False)
        wait_until(lambda: "waiting" in read(tmp_path / "second.err"), second, "the second build waiting")
        assert second.poll() is None and not (cache / "manifest.json").exists()
        waiting = [line for line in read(tmp_path / "second.err").splitlines() if "waiting" in line]
        assert len(waiting) == 1 and waiting[0].startswith(f"feature cache {cache} is in use by PID {first.pid} on ")
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=DEADLINE) == 0, read(tmp_path / "first.err")[-3000:]
        assert second.wait(timeout=DEADLINE) == 0, read(tmp_path / "second.err")[-3000:]
    finally:
        for process in (first, second) if "second" in locals() else (first,):
            if process.poll() is None:
                process.kill()
    first_out, second_out = read(tmp_path / "first.out"), read(tmp_path / "second.out")
    assert "10 of 10 shards encoded" in first_out and "shards encoded" not in second_out  # the second built nothing
    assert first_out.splitlines()[-1] == second_out.splitlines()[-1]  # both read the same features
    assert files_of(cache) == reference and not lock.exists()


def test_a_build_killed_holding_the_lock_is_taken_over_and_resumed(tmp_path, reference):
    cache, lock = tmp_path / "cache", tmp_path / "cache.lock"
    killed = start_build(cache, tmp_path / "killed")
    try:
        wait_until(lambda: (cache / "features-00001.npy").exists(), killed, "two shards built")
    finally:
        killed.kill()
        killed.wait()
    assert owner_pid(lock) == killed.pid and not (cache / "manifest.json").exists()
    resumed = start_build(cache, tmp_path / "resumed", slow=False)
    assert resumed.wait(timeout=DEADLINE) == 0, read(tmp_path / "resumed.err")[-3000:]
    taken = [line for line in read(tmp_path / "resumed.err").splitlines() if "taking over" in line]
    assert len(taken) == 1 and taken[0].startswith(f"feature cache {cache}: taking over the lock of PID {killed.pid}")
    encoded = [line for line in read(tmp_path / "resumed.out").splitlines() if "shards encoded" in line]
    assert len(encoded) == 1 and int(encoded[0].split(": ")[1].split()[0]) < 10  # resumed, not started again
    assert files_of(cache) == reference and not lock.exists()


def build_and_print(directory, slow):
    """Builds (or reads) the tiny cache, then prints the sha256 of all its features."""

    def encoder(pixels):
        if slow:
            time.sleep(0.1)  # 20 batches: about 2 s holding the lock
        return linear_encoder(pixels)

    cache = build_cache(directory, SPLIT, encoder, to_pixels, KEY, batch_size=BATCH_SIZE, desc="tiny")
    print(hashlib.sha256(cache[:].numpy().tobytes()).hexdigest(), flush=True)


if __name__ == "__main__":
    build_and_print(sys.argv[1], slow="--slow" in sys.argv[2:])
