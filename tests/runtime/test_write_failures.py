"""Full disks and failed writes: a write that fails leaves the previous file intact, names the path and
the operating system's reason in one line, and leaves no temporary file behind; a training run keeps going past a
mid-epoch checkpoint that could not be written.

The file-system cases run on a real, small tmpfs (mounting needs root; skipped elsewhere); the training cases
inject the failure where the checkpoint callback writes.
"""

import json
import os
import pathlib
import subprocess

import pytest
import torch

from egg.zoo.discriminative_captioner import callbacks, train
from egg.zoo.discriminative_captioner.data.feature_cache_build import build_cache
from egg.zoo.discriminative_captioner.runtime import atomic
from egg.zoo.discriminative_captioner.runtime.checkpointing import (
    atomic_save,
    atomic_write_text,
    load_resume_state,
    save_checkpoint_pair,
)
from egg.zoo.discriminative_captioner.runtime.errors import WriteError

from ..tiny_cache import KEY, SPLIT, linear_encoder, to_pixels


def mount(directory, options):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True)


class SmallDisk(pathlib.PosixPath):
    """A mounted tmpfs directory; ``remount(options)`` changes its size or makes it read-only."""

    def remount(self, options):
        done = subprocess.run(["mount", "-o", f"remount,{options}", str(self)], capture_output=True)
        assert done.returncode == 0, done.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 64 KiB."""
    directory = SmallDisk(tmp_path / "disk")
    directory.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = mount(directory, "size=64k")
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], capture_output=True)


def leftovers(directory):
    return [name for name in os.listdir(directory) if name.startswith(atomic.PREFIX)]


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one_intact(small_disk):
    path = small_disk / "latest.tar"
    save_checkpoint_pair({"step": 1}, {"epoch": 1}, str(path))
    with pytest.raises(WriteError) as failed:
        save_checkpoint_pair({"weights": torch.zeros(100_000)}, {"epoch": 2}, str(path))  # 400 KB
    assert str(failed.value) == f"cannot write {path}: No space left on device (the previous file is intact)"
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert load_resume_state(str(path))["epoch"] == 1  # the pair is still the previous pair
    assert leftovers(small_disk) == []
    with pytest.raises(WriteError, match="No space left on device$"):  # nothing to keep: no such claim
        atomic_save(torch.zeros(100_000), str(small_disk / "clipcap.pt"))
    assert leftovers(small_disk) == []


def test_a_write_to_a_read_only_file_system_names_it(small_disk):
    atomic_write_text("before", str(small_disk / "accuracy.md"))
    small_disk.remount("ro")
    with pytest.raises(WriteError) as failed:
        atomic_write_text("after", str(small_disk / "accuracy.md"))
    assert str(failed.value) == (f"cannot write {small_disk / 'accuracy.md'}: Read-only file system (the previous "
                                 "file is intact)")  # fmt: skip
    assert (small_disk / "accuracy.md").read_text() == "before"


def test_a_cache_build_on_a_full_disk_stops_in_one_line_and_resumes_once_there_is_space(small_disk, tmp_path):
    with pytest.raises(WriteError, match=f"cannot write {small_disk}/.*: No space left on device"):
        build_cache(str(small_disk / "cache"), SPLIT, linear_encoder, to_pixels, KEY, batch_size=6)
    assert leftovers(small_disk / "cache") == []
    small_disk.remount("size=1m")
    build_cache(str(small_disk / "cache"), SPLIT, linear_encoder, to_pixels, KEY, batch_size=6)
    build_cache(str(tmp_path / "reference"), SPLIT, linear_encoder, to_pixels, KEY, batch_size=6)  # in one go
    names = sorted(os.listdir(tmp_path / "reference"))
    assert sorted(os.listdir(small_disk / "cache")) == names
    for name in names:
        assert (small_disk / "cache" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def failing_writes(monkeypatch, suffix, times):
    """The checkpoint callback's first ``times`` writes of files ending in ``suffix`` fail for want of space."""
    failures, write = [], callbacks.save_checkpoint_pair

    def patched(checkpoint, state, path):
        if str(path).endswith(suffix) and len(failures) < times:
            failures.append(path)
            raise WriteError(path, OSError(28, "No space left on device"))
        return write(checkpoint, state, path)

    monkeypatch.setattr(callbacks, "save_checkpoint_pair", patched)
    return failures


def test_training_keeps_going_past_a_mid_epoch_checkpoint_that_cannot_be_written(tiny_run_args, tmp_path,
                                                                                 monkeypatch, capsys):  # fmt: skip
    run = tmp_path / "run"
    failures = failing_writes(monkeypatch, "latest.tar", times=2)
    results = train.main(tiny_run_args + ["--checkpoint_dir", str(run), "--checkpoint_every", "4"])
    assert len(failures) == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: cannot write")]
    assert len(warnings) == 2 and "training goes on" in warnings[0] and str(run / "latest.tar") in warnings[0]
    assert json.loads((run / "final.json").read_text())["acc"] == results["acc"]  # the run ended normally
    state = load_resume_state(str(run / "latest.tar"))  # the epoch end's, written: the next write worked
    assert (state["epoch"], state["batches_done"]) == (2, 0)


def test_a_checkpoint_that_cannot_be_written_at_an_epoch_end_ends_the_run_in_one_line(tiny_run_args, tmp_path,
                                                                                      monkeypatch):  # fmt: skip
    run = tmp_path / "run"
    failing_writes(monkeypatch, "1.tar", times=1)
    with pytest.raises(WriteError, match=f"cannot write {run / '1.tar'}: No space left on device"):
        train.main(tiny_run_args + ["--checkpoint_dir", str(run)])
    assert not (run / "final.json").exists()
