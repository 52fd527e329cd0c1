"""What a run computes with, kept with each checkpoint: a resume with other values is refused unless allowed.

A run's *computing options* are every option but those that only say how long, where or in how much memory it
goes (``FREE_ON_RESUME``).  Each checkpoint's resume state holds them (``options``), as the launch that wrote it
parsed them, before any model default is filled in.  A resume compares its own with the checkpoint's and refuses
a difference in one line naming each changed option with both values, unless ``--allow_option_change NAME`` lets
it through; ``opts.json`` then records, under ``option_changes``, which values hold from which epoch and batch on,
and keeps the values earlier epochs used.  Checkpoints written before resume states held their options resume
without the comparison.
"""

import json
import os

from ..runtime.atomic import atomic_write_text
from ..runtime.errors import UsageError
from .config import current_names

# How long, where, in how much memory, and with how much logging a run goes: a resume may change them.
FREE_ON_RESUME = {
    "n_epochs", "checkpoint_dir", "checkpoint_freq", "checkpoint_every", "load_from_checkpoint", "preemptable",
    "overwrite", "num_workers", "micro_batch_size", "gradient_checkpointing", "validation_freq", "tensorboard",
    "tensorboard_dir", "cache_dir", "feature_cache_dir", "feature_batch_size", "data_root", "clip_download_root",
    "distributed_port", "allow_world_size_change", "allow_option_change", "no_cuda", "cuda", "device",
    "distributed_context", "rebuild", "decoder", "game", "seed_drawn", "hf_model_named", "report_to", "log_every",
    "log_captions_every", "caption_table_images", "run_name", "tracker_project", "push_to_hub", "hub_private",
}  # fmt: skip
CHANGES = "option_changes"  # opts.json's record of the values changed on a resume


def computing_options(opts):
    """``opts``' computing options as JSON values, as parsed (before model defaults are filled in).  The seed is
    the run's (EGG adds each rank's number to it); a seed drawn at random, not chosen, is left out: a resumed run
    takes its data order and random states from the checkpoint, whatever seed its launch drew."""
    values = {key: value for key, value in opts.saved_values().items() if key not in FREE_ON_RESUME}
    if opts.seed_drawn:
        values.pop("random_seed", None)
    elif values.get("random_seed") is not None:
        values["random_seed"] -= opts.distributed_context.rank
    return json.loads(json.dumps(values, default=str))


def check_changes(checkpoint_path, saved, current, allowed):
    """The options ``current`` changes from ``saved`` (a checkpoint's) that ``allowed`` names (``{name: value}``);
    any other change is refused in one line."""
    names = sorted(set(saved) | set(current))
    if "random_seed" not in current:  # drawn by this launch: whatever it is, the checkpoint's states are used
        names = [name for name in names if name != "random_seed"]
    changed = {name: (saved.get(name), current.get(name)) for name in names if saved.get(name) != current.get(name)}
    refused = {name: values for name, values in changed.items() if name not in allowed}
    if refused:
        listed = ", ".join(f"--{name} {_shown(old)} -> {_shown(new)}" for name, (old, new) in refused.items())
        raise UsageError(f"{checkpoint_path} was written with other options than this launch's: {listed} (the "
                         "checkpoint's -> this launch's); resume with the checkpoint's values, or pass "
                         f"--allow_option_change {' '.join(refused)} to change them from here on")  # fmt: skip
    return {name: current.get(name) for name in changed}


def _shown(value):
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def write_opts_json(directory, values, changes=None, position=None):
    """``directory/opts.json``: ``values`` for a new run; for a resumed one the file's values stay those earlier
    epochs used, with ``changes`` (``{name: value}``) added to its record from ``position`` (``{"epoch": e,
    "batches_done": b}``) on, and the launch's free options (how long, where) updated."""
    path = os.path.join(directory, "opts.json")
    if changes is not None and os.path.isfile(path):
        with open(path) as f:
            written = json.load(f)
        written = current_names(written)
        written.update({key: value for key, value in values.items() if key in FREE_ON_RESUME})
        if changes:
            written.setdefault(CHANGES, []).append({"from": position, "options": changes})
        values = written
    atomic_write_text(json.dumps(values, indent=2, sort_keys=True, default=str), path)
