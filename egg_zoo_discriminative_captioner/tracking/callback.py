"""``RunTracker``: the EGG callback that logs a run as it goes, to its trackers and its run directory.

Every ``log_every`` optimizer updates: the mean loss, reward, P@1, KL, entropy, caption length and group
statistics of the batches since the last line, the learning rate, the gradient's norm at that update, and the
images and tokens per second (``RUN/updates.jsonl``, trackers' ``step/...``).  Every epoch and validation: the
values of the run's log lines (``RUN/log.jsonl``: ``train/...``, ``validation/...``, and ``test/...`` for the
final test).  The caption tables of ``tables.py``.  The trackers' step is the number of optimizer updates over
every launch of the run, and a resumed run continues the same tracker runs (their ids in ``RUN/trackers.json``).
It runs on the leader only.
"""

import json
import os
import time

import torch

from ..callbacks import logged_values
from ..core import core
from ..runtime.atomic import atomic_write_text
from .tables import append_records, fixed_images, training_table, validation_table

IDS_FILE = "trackers.json"
UPDATES_FILE = "updates.jsonl"


class RunTracker(core.Callback):
    """Logs the run live (see the module's docstring).

    - ``trackers``: ``backends.py`` trackers (may be none: the run directory's files are still written);
      ``config``: the run's options as JSON values; ``directory``: the run directory (None: no files);
    - ``log_every``, ``captions_every``: in optimizer updates (0: off); ``table_images``: images per table;
    - ``game``: the ``DiscriminativeGame`` (its ``last_rollouts`` and ``caption``); ``train_split``: the
      training images; ``validation``: the encoded validation split (its fixed images are captioned greedily);
    - ``update_freq``, ``per_image`` (rollouts per image), ``world_size``: to count updates, images and tokens;
      ``updates``: optimizer updates before this launch.
    """

    def __init__(self, trackers, config, directory, game, train_split, validation, log_every=50, captions_every=200,
                 table_images=4, update_freq=1, per_image=1, world_size=1, updates=0, run_name=None):  # fmt: skip
        self.trackers, self.config, self.directory = trackers, config, directory
        self.game, self.train_split, self.validation = game, train_split, validation
        self.log_every, self.captions_every, self.table_images = log_every, captions_every, table_images
        self.update_freq, self.per_image, self.world_size = update_freq, per_image, world_size
        self.updates, self.run_name = updates, run_name
        self.fixed = fixed_images(table_images, len(validation)) if validation is not None else []
        self.with_images = bool(trackers)  # thumbnails are for the trackers: the run directory keeps records only
        self.epoch = 0
        self.grad_norm = None  # at the last update that logs
        self._reset_window()

    # --- hooks -----------------------------------------------------------------------------------------------

    def on_train_begin(self, trainer_instance):
        super().on_train_begin(trainer_instance)
        ids = self._saved_ids()
        for tracker in self.trackers:
            ids[tracker.name] = tracker.start(self.config, self.run_name, ids.get(tracker.name))
        if self.directory and self.trackers:
            atomic_write_text(json.dumps(ids, indent=2), os.path.join(self.directory, IDS_FILE))
        if self.log_every:
            trainer_instance.optimizer.register_step_pre_hook(self._measure_gradient)

    def on_epoch_begin(self, epoch):
        self.epoch = epoch
        self._reset_window()

    def on_batch_end(self, logs, loss, batch_id, is_training=True):
        if not is_training:
            return
        if self.log_every:
            self._add_to_window(logs, loss)
        if (batch_id + 1) % self.update_freq:
            return
        self.updates += 1
        if self.log_every and self.updates % self.log_every == 0:
            self._log_updates()
        if self.captions_every and self.updates % self.captions_every == 0:
            step = getattr(self.game, "last_rollouts", None)
            table = None if step is None else training_table(step, self.train_split, self.table_images,
                                                             self.per_image, self.with_images)  # fmt: skip
            if table is not None:
                self._log_table("train/captions", table, kind="train")

    def on_epoch_end(self, loss, logs, epoch):
        self._log({f"train/{key}": value for key, value in logged_values(loss, logs).items()})

    def on_validation_end(self, loss, logs, epoch):
        self.epoch = epoch
        self._log({f"validation/{key}": value for key, value in logged_values(loss, logs).items()})
        if self.fixed:
            inputs = torch.stack([torch.as_tensor(self.validation.sender_inputs[i]) for i in self.fixed])
            device = next(self.game.parameters()).device
            captions = self.game.caption(inputs.to(device))
            table = validation_table(self.validation.split, self.fixed, captions, self.with_images)
            self._log_table("validation/captions", table, kind="validation")

    def log_final(self, results):
        """Logs the final test's results (after ``train()``, which ends with ``on_train_end``)."""
        self._log({f"test/{key}": value for key, value in results.items() if isinstance(value, (int, float))})

    def finish(self):
        for tracker in self.trackers:
            tracker.finish()

    # --- the window of updates since the last line -----------------------------------------------------------

    def _reset_window(self):
        self.sums, self.counts, self.losses = {}, {}, []
        self.images = self.tokens = 0
        self.started = time.monotonic()

    def _add_to_window(self, logs, loss):
        self.losses.append(float(loss.detach()) if torch.is_tensor(loss) else float(loss))
        for key, value in logs.aux.items():
            value = value.detach().float()
            self.sums[key] = self.sums.get(key, 0.0) + float(value.sum())
            self.counts[key] = self.counts.get(key, 0) + value.numel()
        if "length" in logs.aux:
            rollouts = logs.aux["length"].numel()
            self.images += self.world_size * rollouts // self.per_image
            self.tokens += self.world_size * float(logs.aux["length"].float().sum())

    def _log_updates(self):
        elapsed = max(time.monotonic() - self.started, 1e-9)
        values = {"loss": sum(self.losses) / max(len(self.losses), 1)}
        values.update({key: self.sums[key] / self.counts[key] for key in self.sums if self.counts[key]})
        values["lr"] = float(self.trainer.optimizer.param_groups[0]["lr"])
        if self.grad_norm is not None:
            values["grad_norm"] = self.grad_norm
        values.update(images_per_s=self.images / elapsed, tokens_per_s=self.tokens / elapsed)
        if self.directory:
            with open(os.path.join(self.directory, UPDATES_FILE), "a") as f:
                f.write(json.dumps({"mode": "update", "update": self.updates, "epoch": self.epoch, **values}) + "\n")
        self._log({f"step/{key}": value for key, value in values.items()})
        self._reset_window()
        self.grad_norm = None

    def _measure_gradient(self, optimizer, args, kwargs):
        """Before the update that logs: the norm of the gradient the optimizer applies (after any clipping)."""
        if (self.updates + 1) % self.log_every:
            return
        grads = [p.grad.detach().float() for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]  # fmt: skip
        if grads:
            self.grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    # --- output ----------------------------------------------------------------------------------------------

    def _log(self, values):
        for tracker in self.trackers:
            tracker.log(values, self.updates)

    def _log_table(self, key, table, kind):
        for tracker in self.trackers:
            tracker.log_table(key, table, self.updates)
        if self.directory:
            fields = {"table": kind, "epoch": self.epoch, "update": self.updates}
            append_records(os.path.join(self.directory, "captions"), table, fields)

    def _saved_ids(self):
        path = os.path.join(self.directory, IDS_FILE) if self.directory else None
        if path and os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        return {}

