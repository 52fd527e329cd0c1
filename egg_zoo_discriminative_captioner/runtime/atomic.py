"""Writing files so that an interrupted run never leaves a half-written one behind (no torch needed).

Every file is written to a temporary name beside its destination and renamed over it once complete, with the
permissions the user's umask gives a new file (``tempfile`` alone would leave it readable by its owner only).
A write that fails for want of space, an I/O error or a read-only file system removes the temporary file, leaves
the destination as it was and raises ``WriteError``, one line naming the path and the reason.
"""

import contextlib
import errno
import glob
import io
import os
import shutil
import tempfile

from .errors import WriteError

PREFIX, SUFFIX = "partial-", ".tmp"  # the temporary files' names: a run killed mid-write leaves one behind
# The reasons a write fails that are the file system's, not the program's.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


@contextlib.contextmanager
def _reported(path):
    """Turns a file-system failure while writing ``path`` into a ``WriteError``."""
    try:
        yield
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        raise WriteError(path, error) from None


class RecordingFile(io.FileIO):
    """A binary file that remembers the first error its writes met (``error``).  ``torch.save`` turns a failed
    write into a RuntimeError that does not say why ("unexpected pos ..."); this keeps the reason."""

    error = None

    def write(self, data):
        try:
            return super().write(data)
        except OSError as error:
            self.error = self.error or error
            raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; on success it is renamed over ``path``, otherwise removed."""
    directory = os.path.dirname(os.path.abspath(path))
    with _reported(path):
        os.makedirs(directory, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=PREFIX, suffix=SUFFIX, dir=directory)
        os.close(handle)
    try:
        with _reported(path):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_leftovers(directory):
    """Removes the temporary files ``atomic_path`` left in ``directory`` when its process was killed mid-write
    (only call it where no other process is writing); returns their names."""
    paths = glob.glob(os.path.join(glob.escape(directory), PREFIX + "*" + SUFFIX))
    paths = sorted(path for path in paths if os.path.isfile(path) and not os.path.islink(path))
    for path in paths:
        os.remove(path)
    return [os.path.basename(path) for path in paths]


def atomic_write_text(text, path):
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a staging directory beside ``path``; on success it replaces ``path``, otherwise it is removed."""
    parent = os.path.dirname(os.path.abspath(path))
    with _reported(path):
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
    try:
        with _reported(path):
            yield staging
            os.chmod(staging, 0o777 & ~_umask())
            if os.path.exists(path):
                shutil.rmtree(path)
            os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
