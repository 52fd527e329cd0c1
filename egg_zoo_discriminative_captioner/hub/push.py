"""Uploading a finished run's captioner and its card to a Hugging Face Hub repository.

The repository gets exactly what makes the captioner loadable (``layout.upload_files``) and a card that names it,
staged in one folder (hard links where the file system allows) and uploaded in one commit that replaces the
repository's other files, so that it never mixes two runs' weights.  A failure (offline, no token, no network, no
right to write there) is one line naming the repository and what failed; the run itself is left as it was.
"""

import contextlib
import importlib
import os
import shutil
import sys
import tempfile

from ..runtime.downloads import check_repo_id
from ..runtime.errors import UsageError
from .card import model_card
from .layout import CARD, read_run, upload_files

COMMAND = "python -m egg.zoo.discriminative_captioner.hub"


def network_errors():
    """The exceptions a Hub call raises for reasons outside this program: the Hub's answers and offline mode are
    ``OSError``s, a malformed id a ``ValueError``; the HTTP client's connection errors are its own."""
    errors = [OSError, ValueError]
    for name in ("httpx2", "httpx"):  # whichever client this huggingface_hub uses
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def why(error):
    """What went wrong in a Hub call, in a few words and a hint of the fix."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if type(error).__name__ == "OfflineModeIsEnabled":
        return "HF_HUB_OFFLINE is set: unset it where the network is reachable"
    if status in (401, 403):
        return (f"the Hub refused the token ({status}): log in with a token that may write there (hf auth login, or "
                "HF_TOKEN)")  # fmt: skip
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200] or 'no reason given'}"


def push_run(directory, repo_id, private=False, commit_message=None, where=None):
    """Uploads the finished run in ``directory`` (its captioner, options and card) to the Hub model repository
    ``repo_id``, created if need be (``private``: made private); returns its URL.  ``where``: how the command
    line named the run, for messages."""
    check_repo_id(repo_id, "repository id")
    run = read_run(directory, where or directory)
    files = upload_files(run)
    message = commit_message or f"DiscriTune: {run.captioner} captioner finetuned on {run.options.get('dataset')}"
    from huggingface_hub import HfApi

    api = HfApi()
    step = "staging its files"
    try:
        with staged(run, files, repo_id) as folder:
            step = "creating the repository"
            url = api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
            if private:  # an existing repository keeps its visibility unless told
                step = "making the repository private"
                api.update_repo_settings(repo_id, private=True)
            step = f"uploading {len(files) + 1} files"
            api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=message,
                              delete_patterns="*")  # fmt: skip
    except network_errors() as error:
        raise UsageError(f"cannot push {directory} to the Hub repository {repo_id}: {step} failed ({why(error)}); the "
                         f"run is complete, push it later with: {COMMAND} {directory} {repo_id}") from None
    url = str(getattr(url, "url", url) or f"https://huggingface.co/{repo_id}")
    print(f"pushed the finetuned {run.captioner} captioner of {directory} and its card to {url}", file=sys.stderr,
          flush=True)  # fmt: skip
    return url


@contextlib.contextmanager
def staged(run, files, repo_id):
    """A folder holding ``files`` (``{path in the repository: local path}``, linked where the file system allows,
    else copied) and the card naming ``repo_id``; removed afterwards.  Beside the run where it can be written
    (links need the same file system), else in the temporary directory."""
    try:
        folder = tempfile.mkdtemp(prefix=".hub-upload-", dir=run.directory)
    except OSError:
        folder = tempfile.mkdtemp(prefix="hub-upload-")
    try:
        for name, local in files.items():
            target = os.path.join(folder, *name.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.link(local, target)
            except OSError:
                shutil.copy2(local, target)
        with open(os.path.join(folder, CARD), "w") as f:
            f.write(str(model_card(run, repo_id)))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
