"""Callbacks: atomic checkpoints, the epoch-0 validation, the sampler's epoch, a progress bar."""

import os

from tqdm.auto import tqdm

from .checkpointing import atomic_save
from .core import core


class AtomicCheckpointSaver(core.CheckpointSaver):
    """EGG's CheckpointSaver (same files, same contents) writing each file atomically."""

    def save_checkpoint(self, filename):
        os.makedirs(self.checkpoint_path, exist_ok=True)
        if len(self.get_checkpoint_files()) > self.max_checkpoints:
            self.remove_oldest_checkpoint()
        atomic_save(self.get_checkpoint(), os.path.join(self.checkpoint_path, f"{filename}.tar"))


class InitialValidation(core.Callback):
    """Validates once before the first update and reports it to the other callbacks as epoch 0.

    Every log then shows the starting captioner's score next to the finetuned one's.  Skipped when a run
    resumes from a checkpoint.
    """

    def on_train_begin(self, trainer_instance):
        super().on_train_begin(trainer_instance)
        trainer = trainer_instance
        if trainer.start_epoch > 0 or trainer.validation_data is None:
            return
        loss, logs = trainer.eval()
        for callback in trainer.callbacks:
            if callback is not self:
                callback.on_validation_end(loss, logs, 0)


class EpochSetter(core.Callback):
    """Tells the training loader's ``EpochBatchSampler`` which epoch starts, so each epoch has its own order."""

    def __init__(self, sampler):
        self.sampler = sampler

    def on_epoch_begin(self, epoch):
        self.sampler.set_epoch(epoch)


class ProgressBar(core.Callback):
    """A tqdm bar over each epoch's training batches (on stderr; silent when stderr is not a terminal)."""

    def __init__(self, n_batches):
        self.n_batches = n_batches
        self.bar = None

    def on_epoch_begin(self, epoch):
        self.bar = tqdm(total=self.n_batches, desc=f"epoch {epoch}", leave=False, disable=None)

    def on_batch_end(self, logs, loss, batch_id, is_training=True):
        if is_training and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(acc=f"{logs.aux['acc'].mean().item():.3f}", refresh=False)

    def on_epoch_end(self, loss, logs, epoch):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
