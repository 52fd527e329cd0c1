"""Callbacks: the epoch-0 validation, the sampler's epoch and position, resumable checkpoints, logs, progress.

They work on both cores (facebookresearch EGG's Trainer and the bundled one).  In ``train.py`` the order is:
``InitialValidation`` first, ``EpochSetter`` before ``CheckpointWriter`` (which reads its position).
"""

import contextlib
import json
import os
import signal
import sys
import time

from tqdm.auto import tqdm

from .core import core
from .runtime import distributed
from .runtime.checkpointing import (
    resume_state_path,
    rng_states,
    save_checkpoint_pair,
    set_rng_states,
)
from .runtime.errors import UsageError, WriteError


class InitialValidation(core.Callback):
    """Validates the starting captioner before the first update and reports it to every callback as epoch 0.

    Every log then shows the starting captioner's score next to the finetuned one's.  It runs when the first
    epoch begins, i.e. after every callback's ``on_train_begin`` (``EarlyStopperAccuracy`` needs its trainer),
    and sends ``on_validation_begin`` and ``on_validation_end`` as the Trainer's own validation does.  Skipped
    under ``--validation_freq 0`` (no validation at all); train.py leaves it out when a run resumes.
    """

    def __init__(self):
        self.done = False

    def on_epoch_begin(self, epoch):
        if self.done:
            return
        self.done = True
        trainer = self.trainer
        if trainer.validation_data is None or trainer.validation_freq <= 0:
            return
        for callback in trainer.callbacks:
            callback.on_validation_begin(0)
        loss, logs = trainer.eval()
        for callback in trainer.callbacks:
            callback.on_validation_end(loss, logs, 0)


class EpochSetter(core.Callback):
    """Tells the training loader's ``EpochBatchSampler`` which epoch starts, and where a resumed epoch goes on.

    Each epoch's order is a function of (seed, epoch).  ``resume_from(state)`` takes a resume state (see
    ``checkpointing``): the sampler's seed, the epoch in progress, the batches of it already trained, and the
    random generators' states, which are restored right before that epoch's first remaining batch.  In a
    data-parallel run the state holds every rank's generators (``rank_rng``), and each rank restores its own;
    resumed with another number of ranks (``--allow_world_size_change``), each keeps this launch's.
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self.epoch = None  # the epoch in progress
        self.offset = 0  # batches of it trained before this launch
        self.resume = None

    def resume_from(self, state):
        sampler = state["sampler"]
        if state["batches_done"] and (sampler["n_items"], sampler["batch_size"]) != (
            self.sampler.n_items,
            self.sampler.batch_size,
        ):
            raise UsageError(
                f"the checkpoint stopped in the middle of an epoch of {sampler['n_items']} images in batches of "
                f"{sampler['batch_size']}; resume it with the same data and --batch_size {sampler['batch_size']}"
            )
        self.sampler.load_state_dict(sampler)
        self.resume = state

    def on_epoch_begin(self, epoch):
        self.sampler.set_epoch(epoch)
        self.epoch, self.offset = epoch, 0
        if self.resume is not None:
            state, self.resume = self.resume, None
            if state["epoch"] != epoch:
                raise RuntimeError(f"the resume state continues epoch {state['epoch']}, the Trainer starts {epoch}")
            self.offset = self.sampler.start_batch = state["batches_done"]
            rank, world_size = distributed.rank_and_world_size()
            ranks = state.get("rank_rng") or [state["rng"]]  # states written before rank_rng hold the leader's
            if len(ranks) == world_size:
                set_rng_states(ranks[rank])

    def n_batches(self):
        """Batches in a whole epoch."""
        return len(self.sampler)

    def state(self, epoch, batches_done, updates):
        """A resume state that continues ``epoch`` after ``batches_done`` of its batches.  A collective in a
        data-parallel run: every rank's generators are gathered (``rank_rng``, in rank order)."""
        ranks = distributed.gather_objects(rng_states())
        return {
            "sampler": self.sampler.state_dict(),
            "epoch": epoch,
            "batches_done": batches_done,
            "updates": updates,
            "rng": ranks[0],
            "rank_rng": ranks,
            "world_size": len(ranks),
        }


class CheckpointWriter(core.CheckpointSaver):
    """EGG's CheckpointSaver (same ``<epoch>.tar`` and ``final.tar``), resumable, preemptible and atomic.

    - every file is written atomically, with its resume state beside it (``checkpointing``);
    - ``checkpoint_every`` N > 0 writes ``latest.tar`` every N optimizer updates, in the middle of an epoch
      (on an epoch's last batch it is written at the epoch's end instead);
    - SIGTERM (what SLURM sends before preempting a job) and SIGINT (Ctrl-C) let the current update finish,
      then write ``latest.tar``, print one line naming it and the command that resumes it, and exit with
      128 + the signal number.  A second signal acts at once.  During a validation, the checkpoint waits for
      its end; after the last one, ``final.tar`` is the checkpoint (the final evaluation is what is left).
    - a mid-epoch checkpoint that cannot be written (a full disk) is reported in one line and training goes on;
      any other failed write ends the run with that line (``WriteError``).  The previous files stay intact.
    - in a data-parallel run every rank has one (``writes`` on the leader only): the ranks agree on each update
      whether a signal has come to any of them, gather their random states into the leader's checkpoint, and
      stop together once it is written.
    """

    LATEST = "latest"
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpoint_path, position, checkpoint_freq=1, checkpoint_every=0, update_freq=1,
                 resume_command="", updates=0, writes=True, options=None):  # fmt: skip
        super().__init__(checkpoint_path, checkpoint_freq=checkpoint_freq)
        self.writes = writes
        self.options = options  # the run's computing options, kept in each resume state (options/resume.py)
        self.position = position
        self.checkpoint_every = checkpoint_every
        self.update_freq = update_freq
        self.resume_command = resume_command
        self.updates = updates  # optimizer updates so far, over every launch of the run
        self.pending = False  # a mid-epoch checkpoint that is due at the epoch's end
        self.signal = None
        self.previous_handlers = {}

    # --- hooks -----------------------------------------------------------------------------------------------

    def on_train_begin(self, trainer_instance):
        super().on_train_begin(trainer_instance)
        self.epoch_counter = trainer_instance.start_epoch  # upstream starts at 0 whatever it resumes
        try:
            for signum in self.SIGNALS:
                self.previous_handlers[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # not the main thread: signals keep their default behaviour
            self.previous_handlers = {}

    def on_batch_end(self, logs, loss, batch_id, is_training=True):
        if not is_training or (batch_id + 1) % self.update_freq:
            return
        self.updates += 1
        due = self._signalled() or (self.checkpoint_every and self.updates % self.checkpoint_every == 0)
        if not due:
            return
        batches_done = self.position.offset + batch_id + 1
        if batches_done >= self.position.n_batches():
            self.pending = True  # the epoch is over: on_epoch_end writes it as a complete epoch
            return
        try:
            path = self.save_checkpoint(self.LATEST, completed=self.position.epoch - 1, batches_done=batches_done)
        except WriteError as error:  # only the leader writes
            if self.signal is not None:  # stopping: the run ends with the error, the older checkpoints intact
                raise
            print(f"warning: {error}; training goes on, and tries again at the next mid-epoch checkpoint",
                  file=sys.stderr, flush=True)  # fmt: skip
            path = None
        self._stop_if_signalled(path)

    def on_epoch_end(self, loss, logs, epoch):
        super().on_epoch_end(loss, logs, epoch)
        stop_now = self._signalled() and not self._validates(epoch)
        if self.pending or stop_now:
            self.pending = False
            path = self.save_checkpoint(self.LATEST, completed=epoch)
            if stop_now:
                self._stop_if_signalled(path)

    def on_validation_end(self, loss, logs, epoch):
        if self._signalled():
            self._stop_if_signalled(self.save_checkpoint(self.LATEST, completed=epoch))

    def on_train_end(self):
        super().on_train_end()  # final.tar
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler)
        self.previous_handlers = {}
        signum = self._signalled()
        if signum:  # arrived after the last update and validation: training is complete
            self._exit(signum, final_evaluation_left(self.checkpoint_path, self.resume_command))

    # --- files ---------------------------------------------------------------------------------------------

    def save_checkpoint(self, filename, completed=None, batches_done=0):
        """Writes ``<filename>.tar`` (resuming continues after ``completed`` epochs and ``batches_done`` batches of
        the next one) and its resume state; returns the path."""
        completed = self.epoch_counter if completed is None else completed
        path = os.path.join(self.checkpoint_path, f"{filename}.tar")
        state = self.position.state(completed + 1, batches_done, self.updates)  # on every rank: it gathers
        if not self.writes:
            return path
        if self.options is not None:
            state["options"] = self.options
        os.makedirs(self.checkpoint_path, exist_ok=True)
        if len(self.get_checkpoint_files()) > self.max_checkpoints:
            self.remove_oldest_checkpoint()
        save_checkpoint_pair(self.get_checkpoint()._replace(epoch=completed), state, path)
        return path

    def remove_oldest_checkpoint(self):
        oldest = os.path.join(self.checkpoint_path, self.natural_sort(self.get_checkpoint_files())[0])
        for path in (oldest, resume_state_path(oldest)):
            if os.path.exists(path):
                os.remove(path)

    # --- signals -------------------------------------------------------------------------------------------

    def _on_signal(self, signum, frame):
        self.signal = signum
        signal.signal(signum, self.previous_handlers[signum])  # a second one is not deferred

    def _validates(self, epoch):
        """Whether the Trainer validates after ``epoch`` (then the checkpoint waits for the validation)."""
        trainer = self.trainer
        if trainer.validation_data is None or trainer.validation_freq <= 0:
            return False
        return epoch % trainer.validation_freq == 0

    def _signalled(self):
        """The signal that has come to this process or, in a data-parallel run, to any rank (0: none).  A
        collective there: every rank asks at the same points, so all checkpoint and stop at the same update."""
        return distributed.max_over_ranks(self.signal or 0)

    def _stop_if_signalled(self, path):
        """Stops if a signal has come (a collective); ``path`` is the checkpoint just written, None if it failed."""
        signum = self._signalled()
        if signum and path is None:
            self._exit(signum, f"the checkpoint could not be written (above); resume from the newest one in "
                               f"{self.checkpoint_path} with: {self.resume_command} --preemptable")  # fmt: skip
        if signum:
            self._exit(signum, f"checkpoint written to {path}; resume with: {self.resume_command} "
                               f"--load_from_checkpoint {path}")  # fmt: skip

    def _exit(self, signum, message):
        """Every rank exits with 128 + ``signum`` once the leader's files are written; the leader says why."""
        distributed.barrier()
        if self.writes:
            print(f"{signal.Signals(signum).name}: {message}", file=sys.stderr, flush=True)
        distributed.close(self.trainer)
        sys.exit(128 + signum)


def final_evaluation_left(checkpoint_dir, resume_command):
    """What a run stopped after its training says: its final.tar, and the command that runs the rest."""
    final = os.path.join(checkpoint_dir, "final.tar")
    return (f"training is complete ({final}), its final test evaluation is not: resume with: {resume_command} "
            f"--load_from_checkpoint {final} (it runs the final evaluation only)")  # fmt: skip


@contextlib.contextmanager
def stop_on_signal(message=None):
    """SIGTERM and SIGINT end the block at once: one line, ``"<SIGNAL>: <message>"`` (none without a message), and
    exit 128 + the signal number (for work that leaves nothing to save, such as the final evaluation of a run
    whose final.tar exists).  Outside the main thread signals keep their handlers."""
    def stop(signum, frame):
        if message:
            print(f"{signal.Signals(signum).name}: {message}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)

    try:
        previous = {signum: signal.signal(signum, stop) for signum in CheckpointWriter.SIGNALS}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def rounded(values, digits=4):
    """The floats of a log line rounded to ``digits`` significant digits, for reading in a console."""
    return {key: float(f"{value:.{digits}g}") if isinstance(value, float) else value for key, value in values.items()}


def logged_values(loss, logs):
    """An epoch's (a validation's, the final test's) values as its log line holds them: the loss and the mean of
    each aux value."""
    return {"loss": loss, **{key: value.mean().item() for key, value in logs.aux.items()}}


def log_line(values, log_file=None):
    """Prints a JSON log line rounded for reading, and appends it at full precision to ``log_file`` if given."""
    print(json.dumps(rounded(values)), flush=True)
    if log_file is not None:
        with open(log_file, "a") as f:
            f.write(json.dumps(values) + "\n")


class ConsoleLogger(core.ConsoleLogger):
    """EGG's JSON lines (one per epoch and mode), where validation lines also name the split they score.

    Floats are printed to 4 significant digits; ``log_file`` (a run's ``log.jsonl``) gets them at full precision.
    """

    def __init__(self, print_train_loss=True, validation_split="validation", log_file=None):
        super().__init__(print_train_loss=print_train_loss, as_json=True)
        self.validation_split = validation_split
        self.log_file = log_file

    def print_line(self, loss, logs, **fields):
        log_line({**logged_values(loss, logs), **fields}, self.log_file)

    def on_validation_end(self, loss, logs, epoch):
        self.print_line(loss, logs, mode="test", split=self.validation_split, epoch=epoch)

    def on_epoch_end(self, loss, logs, epoch):
        if self.print_train_loss:
            self.print_line(loss, logs, mode="train", epoch=epoch)


class ProgressBar(core.Callback):
    """Training progress on stderr: a tqdm bar in a terminal, otherwise (a log file) one line every ``interval`` s."""

    def __init__(self, n_batches, interval=60.0, file=None):
        self.n_batches = n_batches
        self.interval = interval
        self.file = file
        self.bar = None
        self.epoch = None
        self.started = self.last_line = 0.0

    def _stream(self):
        return self.file if self.file is not None else sys.stderr

    def on_epoch_begin(self, epoch):
        self.epoch = epoch
        self.started = self.last_line = time.monotonic()
        if self._stream().isatty():
            self.bar = tqdm(total=self.n_batches, desc=f"epoch {epoch}", leave=False, file=self._stream())

    def on_batch_end(self, logs, loss, batch_id, is_training=True):
        if not is_training:
            return
        acc = logs.aux["acc"].mean().item() if "acc" in logs.aux else float("nan")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(acc=f"{acc:.3f}", refresh=False)
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            rate = (batch_id + 1) / max(now - self.started, 1e-9)
            print(f"epoch {self.epoch}: batch {batch_id + 1}/{self.n_batches}, acc {acc:.3f}, {rate:.2f} batches/s",
                  file=self._stream(), flush=True)  # fmt: skip

    def on_epoch_end(self, loss, logs, epoch):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
