"""Writing files so that an interrupted run never leaves a half-written one behind."""

import contextlib
import os
import shutil
import tempfile

import torch


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; on success it is renamed over ``path``, otherwise removed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix="partial-", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj, path):
    """``torch.save`` that never leaves a truncated file at ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text, path):
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a staging directory beside ``path``; on success it replaces ``path``, otherwise it is removed."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="partial-", dir=parent)
    try:
        yield staging
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
