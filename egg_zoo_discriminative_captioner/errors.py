"""Errors caused by the user's input, which the command line reports as one line instead of a traceback."""

import sys


class UsageError(Exception):
    """Bad input (a missing file, an impossible option, a corrupted cache): the message says how to fix it."""


def missing_weights(what, source, flag, error):
    """A UsageError for weights that could not be loaded or downloaded, naming the flag that takes a local path."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UsageError(
        f"cannot load {what} from {source!r} ({type(error).__name__}: {reason}); "
        f"without network access, download it elsewhere and pass its local path with {flag}"
    )


def run_command(main):
    """Runs ``main(sys.argv[1:])``; a UsageError ends the process with one line on stderr and exit status 1."""
    try:
        main(sys.argv[1:])
    except UsageError as error:
        sys.exit("error: " + " ".join(str(error).split()))  # one line, whatever the message quotes
