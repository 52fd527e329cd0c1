"""Where each released model file comes from, which option takes a local copy, and where it is looked for.

``prerequisites()`` is the data behind ``python data_scripts/download.py models`` and the messages that name a
missing file.  Importing this module loads neither torch nor transformers nor clip: CLIP's URLs are read from the
clip package's source on first use, not by importing it.

The ClipCap files carry their GPT-2 weights (the language model is built from its config and filled from the
ClipCap file), so GPT-2 needs only its config and tokenizer files.
"""

import ast
import importlib.util
import os
import re
from typing import Dict, NamedTuple

from .errors import UsageError

CLIPCAP_README = "https://github.com/rmokady/CLIP_prefix_caption#pre-trained-weights-for-the-official-paper"
CLIPCAP_DRIVE = "https://drive.google.com/file/d/{}/view?usp=sharing"
HUB = "https://huggingface.co/{}"
HF_CACHE = "the Hugging Face cache ($HF_HOME/hub, default ~/.cache/huggingface/hub)"
BLIP = "Salesforce/blip-image-captioning-base"
HF_CLIP = "openai/clip-vit-base-patch32"
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")  # a Hub repository id: [NAMESPACE/]NAME


def check_repo_id(repo_id, where):
    """Refuses, in one line, a ``repo_id`` the Hub cannot hold (``where``: the option or argument that gave it)."""
    if len(repo_id) > 96 or not REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith("."):
        raise UsageError(f"{where} {repo_id}: not a Hub repository id (NAME or NAMESPACE/NAME of letters, digits, "
                         "'-', '_' and '.', at most 96 characters)")  # fmt: skip


class Prerequisite(NamedTuple):
    """One downloadable file or hub model."""

    url: str  # where to download it
    flag: str  # the option(s) that take a local path instead
    where: str  # where it is looked for when no path is given


# ClipCap's Google Drive files, as the CLIP_prefix_caption README links them: (Drive id, what it is).
CLIPCAP_FILES = {
    "conceptual_weights.pt": ("14pXWwB4Zm82rsDdvbGguLfx9F8aM7ovT", "ClipCap-ConCap: MLP mapper, Conceptual Captions"),
    "coco_weights.pt": ("1IdaBtMSvtyzF0ByVaBHtvM0JYSXRExRX", "ClipCap-COCO: MLP mapper, COCO"),
    # the transformer mapper's file has no documented name; this is the name we suggest saving it under
    "coco_transformer_weights.pt": (
        "1GYPToCqFREwi285wPLhuVExlz7DDUDfJ",
        "ClipCap transformer mapper, COCO (frozen GPT-2; needs --captioner_clip_model RN50x4)",
    ),
}
# Hub models: the files a run reads (GPT-2's weights come from the ClipCap file).
HUB_FILES = {
    "gpt2": ("config.json", "vocab.json", "merges.txt", "tokenizer.json"),
    BLIP: (),  # the whole repository: model, tokenizer and processor
    HF_CLIP: (),
}
CLIP_NAMES = {"ViT-B-32.pt": "ViT-B/32", "RN50x4.pt": "RN50x4"}  # file -> clip.load name
DESCRIPTIONS = {
    **{name: what for name, (_, what) in CLIPCAP_FILES.items()},
    "ViT-B-32.pt": "CLIP ViT-B/32: the retriever and the MLP ClipCaps' image encoder",
    "RN50x4.pt": "CLIP RN50x4: the transformer-mapper ClipCap's image encoder",
    "gpt2": "GPT-2 config and tokenizer (ClipCap's language model)",
    BLIP: "BLIP base, COCO captioning (--captioner blip)",
    HF_CLIP: "CLIP ViT-B/32 for --clip_backend transformers "
    "(or convert ViT-B-32.pt with data_scripts/convert_clip_to_transformers.py)",
}


def clip_url(name):
    """The download URL of the CLIP model ``name`` (e.g. "ViT-B/32"): the clip package's ``_MODELS[name]``.

    Read from the package's source so that torch is not imported; imported from ``clip.clip`` if that fails.
    """
    spec = importlib.util.find_spec("clip")  # finds the package without running its __init__ (which loads torch)
    if spec is None:
        raise ModuleNotFoundError("the openai clip package is not installed (pip install openai-clip)")
    models = None
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], "clip.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_MODELS" for t in node.targets):
                models = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError):
        pass
    if models is None:
        from clip.clip import _MODELS as models
    return models[name]


def clip_directory():
    """Where ``clip.load`` looks for (and downloads) named models unless --clip_download_root says otherwise."""
    return os.path.join(os.path.expanduser("~"), ".cache", "clip")


def default_cache_dir():
    """The user cache directory (``platformdirs``), e.g. ``~/.cache/discriminative_captioner``: the synthetic
    world, the feature caches and the compiler's files go under it unless ``--cache_dir`` says otherwise."""
    import platformdirs

    return platformdirs.user_cache_dir("discriminative_captioner")


def default_models_directory():
    """``data.files.models_directory()``: $DISCRITUNE_MODELS, else $DISCRITUNE_DATA/models."""
    from ..data.files import models_directory

    return models_directory()


def prerequisites(models_directory=None) -> Dict[str, Prerequisite]:
    """``{file or hub id: Prerequisite(url, flag, where)}`` for every released model the paper's runs use.

    ``models_directory`` defaults to ``default_models_directory()``.
    """
    models = models_directory or default_models_directory()
    entries = {
        name: Prerequisite(CLIPCAP_DRIVE.format(drive_id), "--clipcap_checkpoint", os.path.join(models, name))
        for name, (drive_id, _) in CLIPCAP_FILES.items()
    }
    clip_flags = "--clip_model / --captioner_clip_model (the .pt path), or --clip_download_root (its folder)"
    for file, name in CLIP_NAMES.items():
        entries[file] = Prerequisite(clip_url(name), clip_flags, os.path.join(clip_directory(), file))
    entries["gpt2"] = Prerequisite(HUB.format("gpt2"), "--language_model (a directory)", HF_CACHE)
    entries[BLIP] = Prerequisite(HUB.format(BLIP), "--blip_model (a directory)",
                                 f"{os.path.join(models, BLIP.split('/')[-1])}, else {HF_CACHE}")  # fmt: skip
    entries[HF_CLIP] = Prerequisite(HUB.format(HF_CLIP), "--clip_model (a directory)", HF_CACHE)
    return entries


def download_command(name, models_directory=None):
    """A shell command that puts one prerequisite where it is looked for; None for the Google Drive files."""
    if name in CLIP_NAMES:
        return f"curl -L --create-dirs -o {os.path.join(clip_directory(), name)} {clip_url(CLIP_NAMES[name])}"
    if name == BLIP:
        local = os.path.join(models_directory or default_models_directory(), BLIP.split("/")[-1])
        return f"hf download {BLIP} --local-dir {local}"
    if name in HUB_FILES:
        return " ".join(["hf download", name, *HUB_FILES[name]])  # into the Hugging Face cache
    return None  # Drive asks a browser to confirm large files


def describe(name, entry=None):
    """One line about a prerequisite: what it is, its URL, where it is looked for and the flag for a local path."""
    entry = entry or prerequisites()[name]
    return (f"{name} ({DESCRIPTIONS[name]}): download from {entry.url} -> {entry.where}; "
            f"or pass a local path with {entry.flag}")  # fmt: skip
