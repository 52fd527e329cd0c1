"""The captioners that ``evaluate`` and ``caption`` take: ``[LABEL=]SPEC`` -> a captioner in eval mode.

A SPEC is ``pretrained`` (the captioner the options describe), a run directory (its finetuned captioner:
``clipcap.pt``, ``blip/``, ``hf/`` or ``final.tar``), an EGG checkpoint of this game (``RUN/final.tar``), a
ClipCap file (``RUN/clipcap.pt`` or a released one), a BLIP directory or any other transformers captioner's
directory (``hf:DIR`` or ``hf:HUB_ID``; a PEFT adapter directory loads its base model with the adapters
merged).  A run's files are rebuilt with the captioner options the run saved in ``RUN/opts.json``, so they need
neither the run's data set nor its retriever.
"""

import json
import os
from dataclasses import dataclass

from ..captioners import build_captioner
from ..captioners.hf_folders import check_captioner_folder
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


def parse_model(text, flag="--models"):
    """``[LABEL=]WHAT`` -> ModelSpec; a path that is not a captioner is a one-line error saying what it is."""
    label, _, what = text.partition("=") if "=" in text.split(os.sep)[0] else ("", "", text)
    if what == "pretrained":
        return ModelSpec(label or "pretrained", "pretrained")
    if what.startswith("hf:"):  # a transformers captioner: a directory or a hub id
        check_captioner_folder(what[3:], f"{flag} {what}")
        return ModelSpec(label or what[3:].rstrip("/").split("/")[-1], "hf", what[3:], f"{flag} {what}")
    if os.path.isdir(what) and os.path.isfile(os.path.join(what, "opts.json")):  # a run directory
        found = [name for name in RUN_CAPTIONERS if os.path.exists(os.path.join(what, name))]
        if not found:
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


def run_options(path):
    """The captioner options a run saved next to ``path`` (``RUN/opts.json``, under their current names), or {}
    outside a run."""
    saved = os.path.join(os.path.dirname(os.path.abspath(path)), "opts.json")
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
    model_opts = opts.replace(**run_options(spec.path)) if spec.kind != "pretrained" else opts
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
    captioner = build_captioner(model_options(opts, spec, dataset)).to(opts.device)
    if spec.kind == "checkpoint":
        load_captioner_checkpoint(captioner, spec.path)
    return captioner.eval()
