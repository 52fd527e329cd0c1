"""Every file a run needs, checked before any is loaded: the missing ones are reported together, in one error.

For each model option (captioner weights, its language model and image encoder, the retriever) and the data set,
``check_files`` looks where the loaders will look, resolves the released files that game files name by their bare
name (in ``$DISCRITUNE_MODELS``), and raises one ``UsageError`` listing, per missing file, where it was looked for,
the flag that takes a path and where to download it.  Hub models and named CLIP models that are not on this
machine count as missing when the machine is offline (``HF_HUB_OFFLINE=1``); otherwise the loaders download them.
"""

import glob
import os
from dataclasses import dataclass

from ..data import OWN_MODELS
from ..data.files import default_data_root, models_directory, required_files
from . import downloads
from .errors import UsageError


@dataclass
class Missing:
    """A file a run needs and does not find."""

    what: str
    looked: str  # where it was looked for
    flag: str  # the option that takes a path
    source: str  # where to get it


def offline():
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def source_of(name, default):
    """Where to download the released file or hub model ``name`` from."""
    entry = downloads.prerequisites().get(name)
    return entry.url if entry else default


def check_file(path, what, flag, source):
    """A Missing for ``path`` unless it is a file (a directory or nothing there is reported as such)."""
    if os.path.isfile(path):
        return None
    found = "a directory is there, not a file" if os.path.isdir(path) else "not found"
    return Missing(what, f"{os.path.abspath(path)} ({found})", flag, source)


def check_hub_model(name, what, flag, needs="config.json"):
    """A hub id or a local transformers directory; a hub id counts as missing offline unless it is cached."""
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, needs)):
            return None
        return Missing(what, f"{os.path.abspath(name)} (a directory without {needs})", flag,
                       "a directory saved with save_pretrained")  # fmt: skip
    if os.path.exists(name):
        return Missing(what, f"{os.path.abspath(name)} (a file, not a transformers directory)", flag,
                       "a directory saved with save_pretrained")  # fmt: skip
    if os.path.isabs(name) or name.startswith((".", "~")):
        return Missing(what, f"{name} (not found)", flag, "a directory saved with save_pretrained")
    if not offline() or hub_cached(name, needs):
        return None
    return Missing(what, f"the hub id {name!r} in the Hugging Face cache (offline: HF_HUB_OFFLINE=1)", flag,
                   source_of(name, f"https://huggingface.co/{name}"))  # fmt: skip


def hub_cached(name, filename, cache_dir=None):
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, filename, cache_dir=cache_dir), str)
    except ValueError:  # not a valid repository id
        return False


def check_clip(name, what, flag, download_root):
    """A CLIP model name (downloaded into ``download_root``) or a CLIP ``.pt`` file."""
    urls = {entry.url: file for file, entry in downloads.prerequisites().items() if file.endswith(".pt")}
    try:
        url = downloads.clip_url(name)
    except KeyError:  # not a name: a path
        source = "a CLIP .pt file"
        if os.path.isdir(name) and flag == "--clip_model":  # a transformers or open_clip folder among OpenAI's
            source += f"; a folder of another backend is given as transformers:{name} or open_clip:local-dir:{name}"
        return check_file(name, what, flag, source)
    path = os.path.join(download_root or downloads.clip_directory(), os.path.basename(url))
    if os.path.isfile(path) or not offline():
        return None
    return Missing(
        f"{what} ({urls.get(url, os.path.basename(url))})",
        f"{path} (its folder is --clip_download_root; offline: HF_HUB_OFFLINE=1)",
        flag if flag.endswith("PATH") else f"{flag} PATH",
        url,
    )


def resolve_released_files(config):
    """``config`` with released files named by their bare name (as game files do) found in the models directory."""
    name = config.clipcap_checkpoint
    if config.captioner == "clipcap" and name and os.path.basename(name) == name and not os.path.exists(name):
        local = os.path.join(models_directory(), name)
        if os.path.isfile(local):
            return config.replace(clipcap_checkpoint=local)
    if config.captioner == "blip" and config.blip_model and not os.path.isdir(config.blip_model):
        local = os.path.join(models_directory(), config.blip_model.rstrip("/").split("/")[-1])
        if os.path.isdir(local):  # a saved copy of the hub model, e.g. ~/data/models/blip-image-captioning-base
            return config.replace(blip_model=local)
    return config


def captioner_missing(opts):
    """What the captioner of ``opts`` needs and does not find (options left unset are not checked)."""
    missing = []
    if opts.captioner == "blip":
        missing.append(check_hub_model(opts.blip_model, "BLIP captioner", "--blip_model"))
        return missing
    if opts.captioner == "hf":
        if opts.hf_model is None:  # the data set's own (the synthetic world builds it when it loads)
            return missing
        adapters = os.path.isfile(os.path.join(opts.hf_model, "adapter_config.json"))
        needs = "adapter_config.json" if adapters else "config.json"
        missing.append(check_hub_model(opts.hf_model, "transformers captioner", "--hf_model", needs=needs))
        return missing
    name = opts.clipcap_checkpoint
    if name is not None and not os.path.isfile(name):
        released = name in downloads.CLIPCAP_FILES
        looked = os.path.abspath(name)
        if os.path.basename(name) == name:
            looked += f" and {os.path.join(models_directory(), name)} ($DISCRITUNE_MODELS)"
        state = " (a directory, not a file)" if os.path.isdir(name) else ""
        source = (
            source_of(name, downloads.CLIPCAP_README)
            if released
            else ("a ClipCap .pt file of yours, or a released one (python data_scripts/download.py models)")
        )
        missing.append(Missing(f"ClipCap weights {name}{state}", looked, "--clipcap_checkpoint", source))
    if opts.language_model is not None:
        missing.append(check_hub_model(opts.language_model, "GPT-2 config and tokenizer", "--language_model"))
    if opts.captioner_clip_model is not None:
        missing.append(check_clip(opts.captioner_clip_model, "ClipCap's CLIP image encoder", "--captioner_clip_model",
                                  opts.clip_download_root))  # fmt: skip
    return missing


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def language_model_weights_missing(opts):
    """The authors' KL reference (``--kl_reference language_model`` with a ``--kl_coeff``) loads GPT-2's weights,
    where the captioner needs only its config and tokenizer."""
    name = opts.language_model
    if not (opts.kl_coeff > 0 and opts.kl_reference == "language_model") or name is None or opts.captioner == "blip":
        return None
    what, flag = "GPT-2 weights (the KL reference of --kl_reference language_model)", "--language_model"
    if not os.path.isdir(name):
        return check_hub_model(name, what, flag, needs="model.safetensors")
    if any(os.path.isfile(os.path.join(name, file)) for file in WEIGHT_FILES):
        return None
    return Missing(what, f"{os.path.abspath(name)} (a directory without {' or '.join(WEIGHT_FILES)})", flag,
                   "a directory saved with save_pretrained, weights included")  # fmt: skip


OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")  # model names that bring their own weights
OPEN_CLIP_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")  # a --clip_pretrained that names a file


def open_clip_tag_cached(name, tag, download_root):
    """Whether open_clip finds the weights of its pretrained ``tag`` of ``name`` on this machine (where
    ``open_clip.pretrained.download_pretrained`` looks: the hub cache, or the URL's file in ``download_root``);
    None when ``tag`` is not one of the model's tags."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(name.replace("/", "-"), tag)
    if not cfg:
        return None
    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])  # 'org/model/' names the default file, as open_clip reads it
        filename = filename or HF_WEIGHTS_NAME
        names = [filename] + [HF_SAFE_WEIGHTS_NAME] * (filename == HF_WEIGHTS_NAME)
        if filename != HF_WEIGHTS_NAME and filename.endswith((".bin", ".pth")):
            names.append(filename[:-4] + ".safetensors")
        return any(hub_cached(repo, file, download_root) for file in names)
    url = cfg.get("url", "")
    root = download_root or os.path.expanduser("~/.cache/clip")
    return bool(url) and os.path.isfile(os.path.join(root, os.path.basename(url)))


def open_clip_missing(opts, what, model_flag, pretrained_flag):
    """An open_clip retriever's weights: ``local-dir:DIR`` (its open_clip_config.json), ``hf-hub:REPO`` (cached
    offline), or ``--clip_model NAME`` with ``--clip_pretrained`` a file (which must exist) or a tag (offline:
    missing unless open_clip finds it cached).  Options that name no weights at all are left to the loader, which
    lists the model's tags."""
    name, pretrained = opts.clip_model, opts.clip_pretrained
    if name.startswith("local-dir:"):
        directory = name[len("local-dir:") :]
        config = os.path.join(directory, "open_clip_config.json")
        if os.path.isfile(config):
            return None
        found = "a directory without open_clip_config.json" if os.path.isdir(directory) else "not found"
        flag = (model_flag[: -len("PATH")] if model_flag.endswith("PATH") else f"{model_flag} ") + "local-dir:DIRECTORY"
        return Missing(f"{what} (open_clip local-dir)", f"{os.path.abspath(directory)} ({found})", flag,
                       "a directory with open_clip_config.json and its weights")  # fmt: skip
    if name.startswith("hf-hub:"):
        return check_hub_model(name[len("hf-hub:") :], f"{what} (open_clip)", model_flag,
                               needs="open_clip_config.json")  # fmt: skip
    if pretrained is None:
        return None
    weights = f"{what} (open_clip {name} weights)"
    looks_like_file = os.sep in pretrained or pretrained.endswith(OPEN_CLIP_SUFFIXES) or os.path.exists(pretrained)
    if looks_like_file:
        return check_file(pretrained, weights, pretrained_flag, f"a checkpoint file of open_clip {name}")
    if not offline():
        return None  # a tag: open_clip downloads it (or the loader names the model's tags)
    cached = open_clip_tag_cached(name, pretrained, opts.clip_download_root)
    if cached:
        return None
    where = "--clip_download_root" if opts.clip_download_root else "the Hugging Face cache or ~/.cache/clip"
    state = "not a tag of the model, nor a file" if cached is None else f"not in {where}"
    flag = pretrained_flag if pretrained_flag.endswith("FILE") else f"{pretrained_flag} FILE"
    return Missing(weights, f"the pretrained tag {pretrained!r} ({state}; offline: HF_HUB_OFFLINE=1)", flag,
                   f"open_clip's tag {pretrained!r} of {name}, downloaded online")  # fmt: skip


def retriever_missing(opts, what="retriever", model_flag="--clip_model", pretrained_flag="--clip_pretrained"):
    """What the retriever of ``opts`` needs and does not find (``what`` and the flags name it in the report:
    another retriever than the run's comes from ``evaluate --eval_retrievers``)."""
    if opts.clip_model is None:
        return []
    if opts.clip_backend == "transformers":
        return [check_hub_model(opts.clip_model, f"{what} CLIP (transformers)", model_flag)]
    if opts.clip_backend == "open_clip":  # open_clip names (ViT-B-32) are no OpenAI CLIP names: no check_clip
        return [open_clip_missing(opts, what, model_flag, pretrained_flag)]
    return [check_clip(opts.clip_model, f"{what} CLIP", model_flag, opts.clip_download_root)]


def data_missing(opts, dataset):
    """What the data set ``dataset`` needs under its root and does not find."""
    if dataset in OWN_MODELS:
        return []
    if dataset == "hf":
        return hf_data_missing(opts)
    root = opts.data_root or default_data_root(dataset)
    source = f"python data_scripts/download.py {dataset}"
    if not os.path.isdir(root):
        return [Missing(f"the {dataset} data directory", f"{os.path.abspath(root)} (not found)", "--data_root",
                        source)]  # fmt: skip
    missing = []
    for what, patterns in required_files(dataset):
        if not any(glob.glob(os.path.join(root, pattern)) for pattern in patterns):
            missing.append(Missing(f"{dataset} {what}", " or ".join(os.path.join(root, p) for p in patterns),
                                   "--data_root", source))  # fmt: skip
    return missing


def hf_data_missing(opts):
    """``--dataset hf``: a local ``--hf_dataset`` directory and ``--data_root`` must exist (a hub id is looked up
    when the data set loads, which says in one line when it cannot be: offline and not in the cache)."""
    name, root, missing = opts.hf_dataset, opts.data_root, []
    local = name and (os.path.exists(name) or os.path.isabs(name) or name.startswith((".", "~")))
    if local and not os.path.isdir(name):
        found = "a file, not a directory" if os.path.exists(name) else "not found"
        missing.append(Missing("the hf data set", f"{os.path.abspath(name)} ({found})", "--hf_dataset",
                               "a directory saved with save_to_disk, or of the data set's parquet files"))  # fmt: skip
    if root and not os.path.isdir(root):
        missing.append(Missing("the hf data set's image directory", f"{os.path.abspath(root)} (not found)",
                               "--data_root", "the directory the image files of --image_column are under"))  # fmt: skip
    return missing


def merge_same_files(missing):
    """One entry per file (ClipCap's image encoder and the retriever are often the same CLIP file)."""
    merged = {}
    for m in missing:
        if m.looked in merged:
            first = merged[m.looked]
            merged[m.looked] = Missing(f"{first.what} = {m.what}", m.looked, f"{first.flag}; {m.flag}", m.source)
        else:
            merged[m.looked] = m
    return list(merged.values())


def check_files(opts, datasets=(), captioner=True, retriever=True, training=False, other_retrievers=()):
    """Raises one UsageError listing every missing file of the captioner, the retriever and ``datasets`` (and, for
    ``training``, the KL reference's; ``other_retrievers``: ``(what, options, model flag, weights flag)`` of more
    retrievers, each reported as ``what``, its files passed with those flags: ``evaluate --eval_retrievers``).

    Model options a data set would fill in (the synthetic world's) are left to it; the released defaults are
    checked for every other data set.  Returns ``opts`` with bare released file names resolved to their local copies.
    """
    opts = resolve_released_files(opts)
    resolved = opts if set(datasets) & OWN_MODELS else opts.with_model_defaults()
    missing = [m for dataset in datasets for m in data_missing(opts, dataset)]
    if captioner:
        missing += captioner_missing(resolved)
    if retriever:
        missing += retriever_missing(resolved)
    for what, other, model_flag, pretrained_flag in other_retrievers:
        missing += retriever_missing(other, what, model_flag, pretrained_flag)
    if training:
        missing.append(language_model_weights_missing(resolved))
    missing = merge_same_files([m for m in missing if m is not None])
    if len(missing) == 1:  # one line
        m = missing[0]
        raise UsageError(f"{m.what} is missing: looked for: {m.looked}; pass a path with: {m.flag}; get it from: "
                         f"{m.source}")  # fmt: skip
    if missing:  # every one at once, a list
        raise UsageError(
            f"{len(missing)} files this run needs are missing:\n"
            + "\n".join(
                f"  - {m.what}\n      looked for: {m.looked}\n      pass a path with: {m.flag}\n"
                f"      get it from: {m.source}"
                for m in missing
            )
            + "\n(python data_scripts/download.py models lists every model file)",
            multiline=True,
        )
    return opts
