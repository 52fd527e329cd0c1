"""A Hub repository as a local folder, for ``evaluate --models hf:REPO_ID`` and ``caption --model hf:REPO_ID``.

``snapshot_download`` fetches it, or, offline (``HF_HUB_OFFLINE=1``), finds it in the local Hugging Face cache;
the folder is then read as a local one, so a repository pushed from a run (``layout.pushed_captioner``) loads as
that run's captioner.  A repository that can be neither downloaded nor found is one line naming it and the flag
that takes a local folder instead.
"""

from ..runtime.errors import UsageError
from .push import network_errors, why

# Weights of other frameworks, which a PyTorch captioner never reads: not downloaded.
OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.tflite", "*.ot", "*.mlmodel", "*.gguf"]


def hub_folder(repo_id, named):
    """The local folder of the Hub model repository ``repo_id`` (``named``: how the command line named it, such
    as ``--models hf:ORG/NAME``)."""
    import huggingface_hub

    flag = named.split(" ")[0]
    try:
        return huggingface_hub.snapshot_download(repo_id, ignore_patterns=OTHER_FRAMEWORKS)
    except network_errors() as error:
        if type(error).__name__ == "LocalEntryNotFoundError":  # offline, or the Hub unreachable: not cached either
            reason = "it is not in the local Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE, or no "
            reason += "network)"
        else:
            reason = why(error)
        raise UsageError(f"{named}: cannot download {repo_id} from the Hugging Face Hub: {reason}; without network "
                         f"access, download it elsewhere and pass its local folder with {flag} hf:DIR") from None
