"""What a finished run holds, which of its files a Hub repository gets, and how such a repository reads back.

A run's finetuned captioner is ClipCap's ``clipcap.pt``, or a transformers folder (``blip/``, ``hf/``); its
``opts.json`` holds the options that rebuild it.  A repository pushed from a run holds, at its root, the
transformers folder's files (so that ``from_pretrained(REPO_ID)`` loads it) or ``clipcap.pt``, with the run's
``opts.json`` and its card; never the checkpoints, whose optimizer states only a resume needs.
"""

import json
import os
from typing import NamedTuple

from ..runtime.downloads import REPO_ID
from ..runtime.errors import UsageError

OPTIONS, RESULTS, CARD = "opts.json", "final.json", "README.md"
CLIPCAP_FILE = "clipcap.pt"
FOLDERS = {"blip": "blip", "hf": "hf"}  # the transformers captioners' folders in a run directory
TRANSFORMERS_FILES = ("config.json", "adapter_config.json")  # a model folder's, a PEFT adapter folder's
# NAME or NAMESPACE/NAME, as the Hub spells repository ids (at most 96 characters; no '--' or '..')


class FinishedRun(NamedTuple):
    """A run that has written its final test results, and its finetuned captioner."""

    directory: str
    options: dict  # opts.json
    results: dict  # final.json
    captioner: str  # clipcap | blip | hf
    path: str  # clipcap.pt or the transformers folder


def is_hub_id(source):
    """Whether ``source`` names a Hub model rather than a local path (a released file's bare name is neither)."""
    return "/" in source and REPO_ID.match(source) is not None and not os.path.exists(source)


def read_json(path, what):
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {what} {path}: {getattr(error, 'strerror', None) or error}") from None
    if not isinstance(values, dict):
        raise UsageError(f"{what} {path} does not hold a JSON object")
    return values


def captioner_of(directory, options):
    """``(kind, path)`` of the finetuned captioner in run ``directory`` whose options are ``options``, or None."""
    kind = options.get("captioner", "clipcap")
    path = os.path.join(directory, FOLDERS.get(kind, CLIPCAP_FILE))
    return (kind, path) if os.path.exists(path) else None


def read_run(directory, where):
    """The finished run in ``directory``; anything else (no run, an unfinished run, no captioner) is refused in one
    line that starts with ``where`` (how the command line named it)."""
    if not os.path.isdir(directory):
        raise UsageError(f"{where}: no such directory")
    if not os.path.isfile(os.path.join(directory, OPTIONS)):
        raise UsageError(f"{where}: not a run directory (no {OPTIONS}: give a train --checkpoint_dir)")
    if not os.path.isfile(os.path.join(directory, RESULTS)):
        raise UsageError(f"{where}: the run has not finished (no {RESULTS} yet): resume it to its end first")
    options = read_json(os.path.join(directory, OPTIONS), "the run's options")
    results = read_json(os.path.join(directory, RESULTS), "the run's final results")
    found = captioner_of(directory, options)
    if found is None:
        expected = FOLDERS.get(options.get("captioner"), CLIPCAP_FILE)
        raise UsageError(f"{where}: the run's finetuned captioner {expected} is missing")
    return FinishedRun(directory, options, results, *found)


def upload_files(run):
    """``{path in the repository: local path}``: what makes ``run``'s captioner loadable, with its options (the
    card is written beside them).  A transformers folder's files go to the root, its own card aside."""
    if run.captioner not in FOLDERS:
        files = {CLIPCAP_FILE: run.path}
    else:
        files = {}
        for root, _, names in os.walk(run.path):
            for name in names:
                local = os.path.join(root, name)
                files[os.path.relpath(local, run.path).replace(os.sep, "/")] = local
        files.pop(CARD, None)
    return {**files, OPTIONS: os.path.join(run.directory, OPTIONS)}


def pushed_captioner(folder):
    """``(kind, path)`` of the captioner a repository pushed from a run holds in ``folder`` (its ``opts.json`` at
    the root beside it), or None for any other folder."""
    if not os.path.isfile(os.path.join(folder, OPTIONS)):
        return None
    try:
        with open(os.path.join(folder, OPTIONS)) as f:
            kind = json.load(f).get("captioner")
    except (OSError, ValueError, AttributeError):
        return None
    if kind in FOLDERS and any(os.path.isfile(os.path.join(folder, name)) for name in TRANSFORMERS_FILES):
        return kind, folder
    if kind == "clipcap" and os.path.isfile(os.path.join(folder, CLIPCAP_FILE)):
        return kind, os.path.join(folder, CLIPCAP_FILE)
    return None
