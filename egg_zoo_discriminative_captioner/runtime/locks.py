"""One writer per directory: a lock file that names its owner (no torch needed).

A run holds ``<checkpoint_dir>/.lock`` while it writes there; a feature-cache build holds ``<cache dir>.lock``,
beside the cache (a build deletes and recreates its directory, whose files must be those of a build in one go).

How it works, and why.  The lock is ``fcntl.flock`` on the lock file, and the file holds its owner's host, PID, the
time it took the lock and its SLURM job as one JSON line.  flock is released by the kernel when its process ends,
however it ends (SIGKILL included), so on one host a lock left by a killed process is told apart from a live one
without trusting PIDs, which are reused (a stale file's PID may run another program, or be a zombie).  A lock file
whose flock is free but which still names an owner was left by a process that did not release it: its owner on this
host has ended, and the lock is taken over with one line saying so.  On a network file system shared by several
hosts, flock works across hosts where the file system supports it (Linux NFS does; Lustre with its ``flock`` mount
option), but not everywhere; hence the recorded host: a lock naming another host is never taken over, since a live
process there cannot be told from a dead one (the message names the host and PID and the file to remove once the
user knows that process is gone).  One exception: SLURM runs one instance of a job at a time, so a lock left by an
earlier run of this same job (same ``SLURM_JOB_ID``, smaller ``SLURM_RESTART_COUNT``: a requeued job on another
node) is stale.  Releasing removes the file while still holding its flock; a process that opened the file just
before then finds it gone from its path and tries again with a new one.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from .errors import UsageError

LOCK_NAME = ".lock"  # a run directory's lock file
HOST = socket.gethostname()


def _this_process():
    owner = {"host": HOST, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    if "SLURM_JOB_ID" in os.environ:
        owner["slurm_job"] = os.environ["SLURM_JOB_ID"]
        owner["slurm_restart"] = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    return owner


def describe(owner):
    """``PID 1234 on host node7 (since 2024-05-01 12:00:03)``, or ``another process`` when unknown."""
    if not owner:
        return "another process"
    return f"PID {owner.get('pid')} on host {owner.get('host')} (since {owner.get('since')})"


def _an_earlier_run_of_this_job(owner):
    """Whether ``owner`` was this SLURM job before SLURM requeued it (so it no longer runs)."""
    job = os.environ.get("SLURM_JOB_ID")
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    return job is not None and owner.get("slurm_job") == job and owner.get("slurm_restart", 0) < restarts


class LockHeld(UsageError):
    """The lock is held by a live process, or named by one on another host that cannot be checked from here."""

    def __init__(self, path, what, owner, advice):
        self.path, self.owner = path, owner
        self.checkable = not owner or owner.get("host") == HOST
        if self.checkable:
            message = f"{what} is in use by {describe(owner)}: {advice}"
        else:
            message = (f"{what} is in use by {describe(owner)}, which cannot be checked from host {HOST}: "
                       f"if that process no longer runs, remove {path} and rerun")  # fmt: skip
        super().__init__(message)


def _read_owner(path_or_fd):
    """The owner recorded in a lock file (a path or an open descriptor); None if it records none."""
    try:
        if isinstance(path_or_fd, int):
            text = os.pread(path_or_fd, 4096, 0)
        else:
            with open(path_or_fd, "rb") as f:
                text = f.read(4096)
        owner = json.loads(text)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _owner_of_held(path, patience=1.0):
    """The owner of a lock another process holds; it writes its record right after taking the lock."""
    deadline = time.monotonic() + patience
    while (owner := _read_owner(path)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return owner


def _missing_directories(directory):
    """``directory`` and those of its parents that do not exist, deepest first."""
    missing = []
    directory = os.path.abspath(directory)
    while not os.path.exists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


class Lock:
    """A lock this process holds (``acquire`` or ``wait``); ``release()`` or the end of a ``with`` block frees it."""

    def __init__(self, path, fd, created=()):
        self.path, self.fd = path, fd
        self.created = list(created)  # directories made for the lock, removed again if the release leaves them empty
        # A forked child (a DataLoader worker) closes its copy: the lock ends with this process, not with its children
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def release(self):
        """Removes the lock file and frees the lock (a no-op when already released, and in a forked child)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # still holding the flock: nobody takes the file being removed
        os.close(self.fd)
        self.fd = None
        for directory in self.created:  # a run that failed before writing anything leaves no empty folder
            try:
                os.rmdir(directory)
            except OSError:  # not empty (or made again by another process): it stays, and so do its parents
                break

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def acquire(path, what, advice="wait for it to end", remove_created=False):
    """Takes the lock at ``path`` (creating its directory) or raises ``LockHeld``, one line naming the owner.

    ``what`` names the locked thing in messages (``"--checkpoint_dir runs/cc"``).  A stale lock is taken over,
    with one line on stderr.  ``remove_created``: the release removes the directories made here if empty.
    """
    created = _missing_directories(os.path.dirname(path)) if remove_created else []
    while True:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # its directory was just removed by a lock's release: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(path, what, _owner_of_held(path), advice) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # released (and its file removed) between our open and our flock: lock the new file
    previous = _read_owner(fd)
    if previous and previous.get("host") != HOST and not _an_earlier_run_of_this_job(previous):
        os.close(fd)
        raise LockHeld(path, what, previous, advice)
    record = json.dumps(_this_process()).encode() + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    os.fsync(fd)
    if previous:
        print(f"{what}: taking over the lock of {describe(previous)}, which has ended without releasing it",
              file=sys.stderr, flush=True)  # fmt: skip
    return Lock(path, fd, created)


def wait(path, what, poll_seconds=1.0):
    """Takes the lock at ``path``, first waiting for the process that holds it (one line says which)."""
    told = False
    while True:
        try:
            return acquire(path, what)
        except LockHeld as held:
            if not told:
                note = "" if held.checkable else f" (if that process no longer runs, remove {path})"
                print(f"{what} is in use by {describe(held.owner)}{note}: waiting for it to finish", file=sys.stderr,
                      flush=True)  # fmt: skip
                told = True
        time.sleep(poll_seconds)
