"""A run directory (``--checkpoint_dir``): checked, locked and read before anything heavy; its ``opts.json``.

A run writes into its directory only if it is empty, holds the run being resumed, or ``--overwrite``; it holds
``<dir>/.lock`` while it writes there.  A resume reads the checkpoint it continues, refuses computing options
that differ from those the checkpoint was written with (``options/resume.py``), and finds a completed run's
``final.json``.
"""

import json
import os
import shutil
import sys
import tempfile

from ..options.resume import check_changes, write_opts_json
from . import locks
from .checkpointing import LOG_FILE, checkpoint_files, load_resume_state, read_checkpoint
from .errors import UsageError
from .precision import training_precision

FINAL_RESULTS = "final.json"  # the final test evaluation's results, written last: a run with it is complete
# A run's files, checkpoints aside (the trackers' files and ids, the caption tables among them)
RUN_FILES = ("opts.json", "clipcap.pt", "blip", "hf", LOG_FILE, "data_counts.json", FINAL_RESULTS, "updates.jsonl",
             "captions", "tensorboard", "wandb", "trackers.json", "README.md")  # fmt: skip


def newest_checkpoint(directory):
    """The newest ``*.tar`` in ``directory`` whose resume state (if any) matches it; None when there is none."""
    paths = [os.path.join(directory, name) for name in checkpoint_files(directory) if name.endswith(".tar")]
    for path in sorted(paths, key=os.path.getmtime, reverse=True):
        try:
            load_resume_state(path)
            return path
        except UsageError:  # a resume state left from another version of the file: try an older checkpoint
            continue
    return None


def remove_run(directory):
    """Removes another run's files from ``directory`` (``--overwrite``); other files stay."""
    names = checkpoint_files(directory) + [name for name in RUN_FILES if os.path.exists(os.path.join(directory, name))]
    for name in names:
        path = os.path.join(directory, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def check_writable(directory):
    """The run will be able to write into ``directory``; nothing is created yet (a failed run leaves no folder)."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"cannot write to --checkpoint_dir {directory}: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to --checkpoint_dir {directory}: {error.strerror or error}") from None


def resumes_in_place(opts):
    """Whether the run continues the run of its --checkpoint_dir (--preemptable, or a checkpoint from there)."""
    if opts.preemptable:
        return True
    if opts.load_from_checkpoint is None or not os.path.isdir(opts.checkpoint_dir):
        return False
    return os.path.samefile(os.path.dirname(os.path.abspath(opts.load_from_checkpoint)), opts.checkpoint_dir)


def check_run_directory(opts):
    """A run writes into --checkpoint_dir only if it is empty, holds the run being resumed, or --overwrite."""
    directory = opts.checkpoint_dir
    if not os.path.isdir(directory):
        return
    finished = [name for name in RUN_FILES if os.path.exists(os.path.join(directory, name))]
    existing = checkpoint_files(directory) + finished
    if existing and not resumes_in_place(opts) and not opts.overwrite:
        raise UsageError(
            f"--checkpoint_dir {directory} holds another run ({', '.join(existing[:4])}"
            f"{', ...' if len(existing) > 4 else ''}): resume it with --load_from_checkpoint {directory}/<file>.tar, "
            "choose another --checkpoint_dir, or pass --overwrite to replace it"
        )


def lock_run_directory(opts):
    """Takes ``<checkpoint_dir>/.lock`` for the whole run, or refuses the run in one line naming the process that
    holds it.  Only the leader of a data-parallel run writes there, so only the leader locks.  The directory is
    made here; a run that fails before writing into it removes it again with the lock."""
    if opts.checkpoint_dir is None or not opts.distributed_context.is_leader:
        return None
    return locks.acquire(os.path.join(opts.checkpoint_dir, locks.LOCK_NAME), f"--checkpoint_dir {opts.checkpoint_dir}",
                         advice="wait for that run to end, or choose another --checkpoint_dir",
                         remove_created=True)  # fmt: skip


def prepare_run(opts, options):
    """Checks paths and checkpoint files in seconds, before anything heavy, and locks the run directory.

    Returns the run's config (``opts`` with ``load_from_checkpoint`` the checkpoint it resumes: ``--preemptable``
    finds the newest in the directory), the resume state (or None), the results of a complete run being resumed
    (or None; see ``check_resume``) and the lock (None without a --checkpoint_dir, and on ranks that do not
    write).  ``options``: the launch's computing options (``options/resume.py``), which a checkpoint it resumes
    must have been written with."""
    training_precision(opts)  # an impossible precision fails here, before the models load
    if opts.hard_distractors and not 1 <= opts.hard_distractors < opts.batch_size:
        raise UsageError(f"--hard_distractors {opts.hard_distractors} must be between 1 and --batch_size - 1")
    if opts.preemptable and opts.checkpoint_dir is None:
        raise UsageError("--preemptable resumes from the newest checkpoint in --checkpoint_dir: set one")
    if opts.checkpoint_dir is not None:
        check_writable(opts.checkpoint_dir)
    lock = lock_run_directory(opts)  # before reading the directory: what it holds cannot change under this run
    try:
        if opts.preemptable and opts.load_from_checkpoint is None:
            opts = opts.replace(load_from_checkpoint=newest_checkpoint(opts.checkpoint_dir))
        if opts.checkpoint_dir is not None:
            check_run_directory(opts)
        return opts, *check_resume(opts, options), lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def check_resume(opts, options):
    """``(resume state, results)`` of --load_from_checkpoint, ``(None, None)`` without one; a checkpoint written
    with other computing options than ``options`` is refused, unless --allow_option_change names them.

    The resume state is None for a checkpoint without one.  A checkpoint that has trained all --n_epochs resumes
    to the final test evaluation alone (a run stopped during it, or before it); the results are those of its
    run's ``final.json`` when that run is complete and this launch continues it (then nothing is left to do).
    """
    if opts.load_from_checkpoint is None:
        return None, None
    path = opts.load_from_checkpoint
    completed = read_checkpoint(path).epoch
    resume = load_resume_state(path)
    if resume is not None and "options" not in resume:  # written before checkpoints held their options
        print(f"# {path} does not record the options it was written with: this launch's are not compared with "
              "them", file=sys.stderr, flush=True)  # fmt: skip
    option_changes(opts, resume, options)
    if opts.n_epochs < completed:
        raise UsageError(f"{path} has trained {completed} epochs, more than --n_epochs {opts.n_epochs}: resume it "
                         f"with --n_epochs {completed} (its final evaluation) or more")  # fmt: skip
    check_world_size(opts, path, resume)
    if opts.n_epochs == completed:
        results = final_results(os.path.dirname(os.path.abspath(path)), completed)
        if results is not None and (opts.checkpoint_dir is None or resumes_in_place(opts)):
            return resume, results
        print(f"# {path} has trained all {completed} epochs: running the final test evaluation only",
              file=sys.stderr, flush=True)  # fmt: skip
    elif resume is None:
        print(f"# {path} has no resume state (not written by this game?): resuming after epoch {completed} with "
              "this launch's random state", file=sys.stderr)  # fmt: skip
    return resume, None


def check_world_size(opts, path, resume):
    """A checkpoint resumes exactly only with the number of processes that wrote it: each restores its own random
    state.  Another number is refused unless --allow_world_size_change."""
    saved = (resume or {}).get("world_size", 1)
    world_size = opts.distributed_context.world_size
    if resume is None or saved == world_size:
        return
    if not opts.allow_world_size_change:
        raise UsageError(f"{path} was written by {saved} processes, this run has {world_size}: resume it with "
                         f"{saved}, or pass --allow_world_size_change (the epoch goes on from its saved batch, "
                         "with other random states)")  # fmt: skip
    print(f"# {path} was written by {saved} processes, this run has {world_size}: the epoch goes on from batch "
          f"{resume['batches_done']}, with this launch's random states", file=sys.stderr, flush=True)  # fmt: skip


def final_results(directory, epochs):
    """The test results in ``directory``'s ``final.json`` if they are those of a run of ``epochs`` epochs."""
    try:
        with open(os.path.join(directory, FINAL_RESULTS)) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("epoch") != epochs:
        return None
    return {key: value for key, value in results.items() if key != "epoch"}


def option_changes(opts, resume, options):
    """The computing options this launch changes from the checkpoint it resumes (``{name: value}``, allowed by
    --allow_option_change; any other change is refused); None for a new run or an older checkpoint."""
    if resume is None or "options" not in resume:
        return None
    allowed = set(opts.allow_option_change or ())
    return check_changes(opts.load_from_checkpoint, resume["options"], options, allowed)


def save_options(opts, directory, resume, options):
    """Writes the run's resolved options next to its checkpoints; a resumed run keeps those its earlier epochs
    used and records what it changes, and from where (``options/resume.py``'s ``write_opts_json``)."""
    values = opts.saved_values()
    changes = option_changes(opts, resume, options)
    position = None if resume is None else {"epoch": resume["epoch"], "batches_done": resume["batches_done"]}
    write_opts_json(directory, values, changes, position)
