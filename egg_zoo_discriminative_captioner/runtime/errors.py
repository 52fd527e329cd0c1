"""Errors caused by the user's input, which the command line reports as one line instead of a traceback."""

import os
import re
import sys

# The first bytes of the files people pass by mistake, and what they are.
MAGIC = ((b"PK\x03\x04", "a ZIP archive"), (b"\x80", "a pickle file"), (b"\xff\xd8\xff", "a JPEG image"),
         (b"\x89PNG", "a PNG image"), (b"\x1f\x8b", "a gzip file"), (b"{", "a JSON or text file"))  # fmt: skip


class UsageError(Exception):
    """Bad input (a missing file, an impossible option, a corrupted cache): the message says how to fix it.

    The command line prints it as one line, or as written with ``multiline=True`` (a list of missing files).
    """

    def __init__(self, message, multiline=False):
        super().__init__(message)
        self.multiline = multiline


class WriteError(UsageError):
    """A file that could not be written (no space, an I/O error, a read-only file system): its path and the
    operating system's reason, in one line.  The file it was to replace is left as it was."""

    def __init__(self, path, error):
        reason = error.strerror or str(error)
        kept = " (the previous file is intact)" if os.path.exists(path) else ""
        super().__init__(f"cannot write {path}: {reason}{kept}")
        self.path = path
        self.reason = reason


def missing_weights(what, source, flag, error):
    """A UsageError for weights that could not be loaded or downloaded, naming the flag that takes a local path."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UsageError(
        f"cannot load {what} from {source!r} ({type(error).__name__}: {reason}); "
        f"without network access, download it elsewhere and pass its local path with {flag}"
    )


def describe_file(path):
    """What ``path`` is, in a few words: 'a directory', 'an empty file', 'a text file', 'a ZIP archive', ..."""
    if os.path.isdir(path):
        return "a directory"
    if not os.path.exists(path):
        return "absent"
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if not head:
        return "an empty file"
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    if head[257:262] == b"ustar":
        return "a tar archive"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return f"a binary file of {os.path.getsize(path)} bytes"


def unreadable_file(path, error, expected):
    """Why ``torch.load`` could not read ``path`` as ``expected`` (e.g. 'a ClipCap state dict'), in one sentence.

    PyTorch's own message for a file holding arbitrary Python objects advises ``weights_only=False``, which runs
    any code the file holds: this says which object it is instead, and never gives that advice.
    """
    what = describe_file(path)
    if what == "a ZIP archive":  # torch.save's format: the file is PyTorch's, its contents are not what we want
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if unsafe:
            return (f"it is a PyTorch file holding Python objects ({unsafe.group(1)}), not {expected} of tensors; "
                    "save the model's state_dict() instead")  # fmt: skip
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        return f"it is a PyTorch file but not {expected} ({reason}), or it is truncated"
    if what == "a pickle file":
        return f"it is a pickle file (an old PyTorch format?) that does not load as {expected}, or it is truncated"
    return f"it is {what}, not {expected} (a file written by torch.save)"


def run_command(main):
    """Runs ``main(sys.argv[1:])``; a UsageError ends the process with one line on stderr and exit status 1."""
    try:
        main(sys.argv[1:])
    except UsageError as error:
        text = str(error) if error.multiline else " ".join(str(error).split())  # one line, whatever it quotes
        sys.exit("error: " + text)
