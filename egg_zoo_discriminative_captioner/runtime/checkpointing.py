"""Checkpoint files and the state a resume needs; every file written atomically (``atomic.py``).

A checkpoint is EGG's ``<name>.tar`` (a ``Checkpoint`` NamedTuple, loadable by either core) plus a *resume state*
``<name>.resume.pt`` beside it: the data sampler's seed and position and the random number generators' states.
EGG's ``Checkpoint`` has fixed fields, so the extra state lives in its own file; it records a fingerprint of the
``.tar`` it belongs to, so a resume state is never applied to another checkpoint.
"""

import hashlib
import os
import random

import numpy as np
import torch

from .atomic import RecordingFile, atomic_directory, atomic_path, atomic_write_text  # noqa: F401 (used from here too)
from .errors import UsageError, unreadable_file

RESUME_SUFFIX = ".resume.pt"
LOG_FILE = "log.jsonl"  # a run's logged lines at full precision, beside its checkpoints


def atomic_save(obj, path):
    """``torch.save`` that never leaves a truncated file at ``path``; a failed write raises ``WriteError``."""
    with atomic_path(path) as tmp:
        _save(obj, tmp)


def _save(obj, path):
    with RecordingFile(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as error:
            if f.error is None:
                raise
            raise f.error from error  # the file system's reason, which atomic_path reports


# --- resume state ----------------------------------------------------------------------------------------------


def rng_states():
    """The states of every global random number generator a run draws from (plain types, ``weights_only``-safe)."""
    version, internal, gauss = random.getstate()
    numpy = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [numpy[0], numpy[1].tolist(), *numpy[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states):
    """Restores what ``rng_states`` returned (CUDA states only where this process sees the same devices)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_state_path(checkpoint_path):
    """``run/3.tar`` -> ``run/3.resume.pt``."""
    path = str(checkpoint_path)
    return (path[: -len(".tar")] if path.endswith(".tar") else path) + RESUME_SUFFIX


def fingerprint(path, tail=1 << 16):
    """Size and hash of the last bytes of a checkpoint: a torch zip file ends with the CRCs of all its records."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - tail))
        return f"{size}:{hashlib.sha256(f.read()).hexdigest()}"


def save_resume_state(state, checkpoint_path):
    """Writes ``state`` beside the (already written) checkpoint, tied to it by its fingerprint."""
    atomic_save({**state, "checkpoint": fingerprint(checkpoint_path)}, resume_state_path(checkpoint_path))


def save_checkpoint_pair(checkpoint, state, path):
    """Writes ``checkpoint`` to ``path`` and the resume ``state`` beside it, both in full before either replaces
    its file: a failed write (``WriteError``) leaves the previous pair as it was."""
    with atomic_path(path) as checkpoint_tmp:
        _save(checkpoint, checkpoint_tmp)
        state = {**state, "checkpoint": fingerprint(checkpoint_tmp)}
        with atomic_path(resume_state_path(path)) as state_tmp:
            _save(state, state_tmp)


def load_resume_state(checkpoint_path):
    """The resume state written with ``checkpoint_path``; None when there is none (e.g. an EGG-written file)."""
    path = resume_state_path(checkpoint_path)
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign files raise several types
        raise UsageError(f"cannot read the resume state {path}: {error}") from error
    if state.get("checkpoint") != fingerprint(checkpoint_path):
        raise UsageError(f"{path} belongs to another version of {checkpoint_path} (it was replaced after a crash?)")
    return state


def read_checkpoint(path, purpose="resume"):
    """The ``Checkpoint`` in ``path``, read lazily (memory-mapped), so a truncated file is found in seconds.

    ``purpose`` ("resume" or "load") words the error: a file that is not an EGG checkpoint says what it is.
    """
    flag = "--load_from_checkpoint" if purpose == "resume" else "a checkpoint of this game"
    if os.path.isdir(path):
        raise UsageError(f"cannot {purpose} from {path}: it is a directory, not an EGG checkpoint (.tar) ({flag})")
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint not found: {path} ({flag})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        epoch = checkpoint.epoch
    except Exception as error:  # truncated files, foreign formats and unknown classes raise several types
        raise UsageError(f"cannot {purpose} from {path}: {unreadable_file(path, error, 'an EGG checkpoint')}") from None
    if not isinstance(epoch, int) or epoch < 0:
        raise UsageError(f"cannot {purpose} from {path}: its epoch is {epoch!r}")
    return checkpoint


def checkpoint_files(directory):
    """The checkpoint files (``*.tar`` and their resume states) in a run directory."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if name.endswith((".tar", RESUME_SUFFIX)))
