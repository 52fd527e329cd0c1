"""The captioners that ``evaluate`` and ``caption`` take: ``[LABEL=]SPEC`` -> a captioner in eval mode.

A SPEC is ``pretrained`` (the captioner the options describe), a run directory (its finetuned captioner:
``clipcap.pt``, ``blip/``, ``hf/`` or ``final.tar``), an EGG checkpoint of this game (``RUN/final.tar``), a
ClipCap file (``RUN/clipcap.pt`` or a released one), a BLIP directory or any other transformers captioner's
directory (``hf:DIR`` or ``hf:HUB_ID``; a PEFT adapter directory loads its base model with the adapters
merged).  ``hf:HUB_ID`` is downloaded (offline: found in the local Hugging Face cache) when the captioner is built,
and read as a local folder; a repository pushed from a run (``hub/``) reads as that run's captioner.  A run's files
are rebuilt with the captioner options the run saved in ``RUN/opts.json``, so they need neither the run's data set
nor its retriever.
"""

import json
import os
from dataclasses import dataclass, replace

from ..captioners import build_captioner
from ..captioners.hf_folders import check_captioner_folder, looks_like_a_path
from ..hub.download import hub_folder
from ..hub.layout import pushed_captioner
from ..options.config import current_names
from ..options.parse import build_parser
from ..runtime.checkpointing import read_checkpoint
from ..runtime.errors import UsageError
from ..runtime.pretrained import FrozenModule

CAPTIONER_KEYS = "sender.captioner."  # the captioner's parameters in a game checkpoint
RUN_CAPTIONERS = ("clipcap.pt", "blip", "hf", "final.tar")  # what a run directory's finetuned captioner may be


@dataclass
class ModelSpec:
    """A captioner to evaluate: ``kind`` is pretrained | checkpoint | clipcap | blip | hf."""

    label: str
    kind: str
    path: str = None
    named: str = None  # how the command line named it, for messages ("--models hf:DIR")
    options: str = None  # the opts.json that lends its captioner options (None: the run's, beside path)


def parse_model(text, flag="--models"):
    """``[LABEL=]WHAT`` -> ModelSpec; a path that is not a captioner is a one-line error saying what it is."""
    label, _, what = text.partition("=") if "=" in text.split(os.sep)[0] else ("", "", text)
    if what == "pretrained":
        return ModelSpec(label or "pretrained", "pretrained")
    if what.startswith("hf:"):  # a transformers captioner: a directory or a hub id
        label, named = label or what[3:].rstrip("/").split("/")[-1], f"{flag} {what}"
        pushed = pushed_spec(label, what[3:], named) if os.path.isdir(what[3:]) else None
        if pushed is not None:
            return pushed
        check_captioner_folder(what[3:], named)
        return ModelSpec(label, "hf", what[3:], named)
    if os.path.isdir(what) and os.path.isfile(os.path.join(what, "opts.json")):  # a run directory
        found = [name for name in RUN_CAPTIONERS if os.path.exists(os.path.join(what, name))]
        if not found:
            pushed = pushed_spec(label or os.path.basename(os.path.abspath(what)), what, f"{flag} {text}")
            if pushed is not None:  # a local copy of a repository pushed from a run
                return pushed
            raise UsageError(f"{flag} {text}: the run in {what} has no finetuned captioner yet "
                             f"(none of {', '.join(RUN_CAPTIONERS)}); give one of its checkpoints, "
                             "RUN/<epoch>.tar")  # fmt: skip
        what = os.path.join(what, found[0])
    if os.path.isdir(what):
        kind = transformers_kind(what)
        if kind is None:
            raise UsageError(f"{flag} {text}: {what} is a directory, but neither a run directory (no opts.json) "
                             "nor a transformers directory (no config.json or adapter_config.json)")  # fmt: skip
    elif os.path.isfile(what):
        kind = "checkpoint" if what.endswith(".tar") else "clipcap"
    else:
        raise UsageError(f"{flag} {text}: no such file or directory (give 'pretrained', a run directory, "
                         "RUN/final.tar, a ClipCap .pt file or a BLIP directory)")  # fmt: skip
    default_label = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(what))), os.path.basename(what))
    return ModelSpec(label or default_label, kind, what)


def pushed_spec(label, folder, named):
    """The captioner of a repository pushed from a run (``folder``: its local copy), rebuilt with the options the
    run saved beside it; None for any other folder."""
    found = pushed_captioner(folder)
    return None if found is None else ModelSpec(label, *found, named, os.path.join(folder, "opts.json"))


def local_spec(spec):
    """``spec`` with a hub id (``hf:HUB_ID``) as the repository's local folder (downloaded, or the local cache's
    copy offline); a repository pushed from a run reads as that run's captioner."""
    if spec.kind != "hf" or os.path.isdir(spec.path) or looks_like_a_path(spec.path):
        return spec
    folder = hub_folder(spec.path, spec.named or f"--models hf:{spec.path}")
    return pushed_spec(spec.label, folder, spec.named) or replace(spec, path=folder)


def transformers_kind(directory):
    """``blip`` for a BLIP captioning directory, ``hf`` for any other transformers or PEFT adapter directory."""
    if os.path.isfile(os.path.join(directory, "adapter_config.json")):
        return "hf"
    try:
        with open(os.path.join(directory, "config.json")) as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError):
        return None
    return "blip" if model_type == "blip" else "hf"


def captioner_option_names():
    """The options of the parser's "captioner" group (those a run's opts.json lends to its files)."""
    groups = build_parser()._action_groups
    return {action.dest for group in groups if group.title == "captioner" for action in group._group_actions}


def run_options(path, saved=None):
    """The captioner options a run saved next to ``path`` (``RUN/opts.json``, or ``saved``; under their current
    names), or {} outside a run."""
    saved = saved or os.path.join(os.path.dirname(os.path.abspath(path)), "opts.json")
    if not os.path.isfile(saved):
        return {}
    try:
        with open(saved) as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {saved}: {error}") from None
    values = current_names(values)
    return {key: value for key, value in values.items() if key in captioner_option_names()}


def model_options(opts, spec, dataset=None):
    """The config that builds ``spec``'s captioner: the run's saved captioner options first, then the data set's
    models (``dataset``; None: the released models)."""
    model_opts = opts.replace(**run_options(spec.path, spec.options)) if spec.kind != "pretrained" else opts
    if spec.kind == "clipcap":
        model_opts = model_opts.replace(captioner="clipcap", clipcap_checkpoint=spec.path)
    elif spec.kind == "blip":
        model_opts = model_opts.replace(captioner="blip", blip_model=spec.path)
    elif spec.kind == "hf":  # adapters in the directory are merged on loading: none are added
        model_opts = model_opts.replace(captioner="hf", hf_model=spec.path, hf_model_named=spec.named, lora_rank=0,
                                        lora_alpha=None, lora_targets=None, merge_lora=False)  # fmt: skip
    return model_opts.with_model_defaults(dataset.model_defaults(model_opts) if dataset is not None else None)


def load_captioner_checkpoint(captioner, path):
    """Loads the captioner's weights from an EGG checkpoint of this game (no game or retriever needed).

    Checkpoints leave frozen parts out (the image encoder); every other key of the captioner must be there.
    """
    checkpoint = read_checkpoint(path, purpose="load")
    state = {key[len(CAPTIONER_KEYS):]: value for key, value in checkpoint.model_state_dict.items()
             if key.startswith(CAPTIONER_KEYS)}  # fmt: skip
    if not state:
        raise UsageError(f"{path} holds no captioner ({CAPTIONER_KEYS}* keys): not a checkpoint of this game")
    frozen = tuple(f"{name}." for name, module in captioner.named_modules() if isinstance(module, FrozenModule))
    frozen_state = {key: value for key, value in captioner.state_dict().items() if key.startswith(frozen)}
    try:
        captioner.load_state_dict({**frozen_state, **state}, strict=True)
    except RuntimeError as error:
        reason = " ".join(str(error).split())[:300]
        raise UsageError(f"{path} does not match the captioner its run's options describe: {reason}") from None


def build_model(opts, spec, dataset=None):
    """The captioner of ``spec`` in eval mode, on ``opts.device``."""
    spec = local_spec(spec)
    captioner = build_captioner(model_options(opts, spec, dataset)).to(opts.device)
    if spec.kind == "checkpoint":
        load_captioner_checkpoint(captioner, spec.path)
    return captioner.eval()
