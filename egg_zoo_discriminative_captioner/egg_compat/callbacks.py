"""Trainer callbacks: the hook base class, console logging and checkpoints, compatible with ``egg.core.callbacks``."""

import json
import os
import pathlib
import re
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Union

import torch

from .interaction import Interaction


class Callback:
    """Base class with every hook the Trainer calls; each default does nothing but remember the trainer."""

    def on_train_begin(self, trainer_instance: "Trainer"):  # noqa: F821
        """Called once before the first epoch; subclasses that override it must keep ``self.trainer``."""
        self.trainer = trainer_instance

    def on_train_end(self):
        """Called once after the last epoch (also after an early stop)."""

    def on_early_stopping(
        self,
        train_loss: float,
        train_logs: Interaction,
        epoch: int,
        test_loss: Optional[float] = None,
        test_logs: Optional[Interaction] = None,
    ):
        """Called when a callback set ``trainer.should_stop``, right before training stops."""

    def on_validation_begin(self, epoch: int):
        """Called before a validation pass."""

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int):
        """Called with the mean validation loss and the epoch's concatenated validation logs."""

    def on_epoch_begin(self, epoch: int):
        """Called before each training epoch; epochs are 1-based."""

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int):
        """Called with the mean training loss and the epoch's concatenated training logs."""

    def on_batch_end(self, logs: Interaction, loss: torch.Tensor, batch_id: int, is_training: bool = True):
        """Called after each batch with its (CPU) logs and its loss tensor."""


class ConsoleLogger(Callback):
    """Print the loss and the epoch mean of every ``aux`` value, as JSON or as ``k=v`` text."""

    def __init__(self, print_train_loss: bool = False, as_json: bool = False):
        self.print_train_loss = print_train_loss
        self.as_json = as_json

    def aggregate_print(self, loss: float, logs: Interaction, mode: str, epoch: int):
        """Print one line for an epoch of ``mode`` ("train" or "test") in upstream EGG's format."""
        dump = {"loss": loss}
        dump.update({key: value.mean().item() for key, value in logs.aux.items()})
        if self.as_json:
            dump.update(mode=mode, epoch=epoch)
            message = json.dumps(dump)
        else:
            # The loss appears twice, in the prefix and among the sorted pairs, as upstream prints it.
            pairs = ", ".join(sorted(f"{key}={value}" for key, value in dump.items()))
            message = f"{mode}: epoch {epoch}, loss {loss}, {pairs}"
        print(message, flush=True)

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int):
        """Print the validation line."""
        self.aggregate_print(loss, logs, "test", epoch)

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int):
        """Print the training line when ``print_train_loss`` is set."""
        if self.print_train_loss:
            self.aggregate_print(loss, logs, "train", epoch)


class Checkpoint(NamedTuple):
    """What a checkpoint file holds; resuming continues after ``epoch``."""

    epoch: int
    model_state_dict: Dict[str, Any]
    optimizer_state_dict: Dict[str, Any]
    optimizer_scheduler_state_dict: Optional[Dict[str, Any]]


def _natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: 2.tar before 10.tar."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class CheckpointSaver(Callback):
    """Save ``<epoch>.tar`` every ``checkpoint_freq`` epochs and ``final.tar`` at the end of training.

    With a ``prefix`` the names are ``<prefix>_<epoch>.tar`` and ``<prefix>_final.tar``.  Before each save,
    the oldest file (natural sort) is removed once the directory holds more than ``max_checkpoints``.
    """

    def __init__(
        self,
        checkpoint_path: Union[str, pathlib.Path],
        checkpoint_freq: int = 1,
        prefix: str = "",
        max_checkpoints: int = sys.maxsize,
    ):
        self.checkpoint_path = pathlib.Path(checkpoint_path)
        self.checkpoint_freq = checkpoint_freq
        self.prefix = prefix
        self.max_checkpoints = max_checkpoints
        self.epoch_counter = 0

    def on_train_begin(self, trainer_instance: "Trainer"):  # noqa: F821
        """Remember the trainer and start counting from the epoch it resumes at."""
        super().on_train_begin(trainer_instance)
        # Upstream starts at 0, so a resumed run with no epochs left would write final.tar with epoch 0.
        self.epoch_counter = trainer_instance.start_epoch

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int):
        """Save ``<epoch>.tar`` when the epoch is a multiple of ``checkpoint_freq`` (never when it is 0)."""
        self.epoch_counter = epoch
        if self.checkpoint_freq > 0 and epoch % self.checkpoint_freq == 0:
            self.save_checkpoint(filename=f"{self.prefix}_{epoch}" if self.prefix else str(epoch))

    def on_train_end(self):
        """Always save ``final.tar``."""
        self.save_checkpoint(filename=f"{self.prefix}_final" if self.prefix else "final")

    def save_checkpoint(self, filename: str):
        """Write ``get_checkpoint()`` to ``<checkpoint_path>/<filename>.tar``, pruning old files first."""
        self.checkpoint_path.mkdir(parents=True, exist_ok=True)
        if len(self.get_checkpoint_files()) > self.max_checkpoints:
            self.remove_oldest_checkpoint()
        torch.save(self.get_checkpoint(), self.checkpoint_path / f"{filename}.tar")

    def get_checkpoint(self) -> Checkpoint:
        """The trainer's current epoch, game, optimizer and scheduler state."""
        scheduler = self.trainer.optimizer_scheduler
        game = self.trainer.game.module if self.trainer.distributed_context.is_distributed else self.trainer.game
        return Checkpoint(
            epoch=self.epoch_counter,
            model_state_dict=game.state_dict(),
            optimizer_state_dict=self.trainer.optimizer.state_dict(),
            optimizer_scheduler_state_dict=scheduler.state_dict() if scheduler else None,
        )

    def get_checkpoint_files(self) -> List[str]:
        """Names of the checkpoint files in the checkpoint directory."""
        return [name for name in os.listdir(self.checkpoint_path) if ".tar" in name]

    @staticmethod
    def natural_sort(to_sort: List[str]) -> List[str]:
        """Sort names with embedded numbers by value: [file1, file10, file2] -> [file1, file2, file10]."""
        return sorted(to_sort, key=_natural_key)

    def remove_oldest_checkpoint(self):
        """Delete the first checkpoint file in natural order."""
        oldest = self.natural_sort(self.get_checkpoint_files())[0]
        os.remove(self.checkpoint_path / oldest)


class InteractionSaver(Callback):
    """Save the epoch's logs of the listed epochs to ``<checkpoint_dir>/interactions/<mode>/epoch_<e>/``.

    As upstream: ``train_epochs`` and ``test_epochs`` list 1-based epochs (validation logs are saved under
    ``validation``), the file is ``interaction_gpu<rank>`` (a pickled Interaction), and without a
    ``checkpoint_dir`` the files go to ``./interactions``.
    """

    def __init__(
        self,
        train_epochs: Optional[List[int]] = None,
        test_epochs: Optional[List[int]] = None,
        checkpoint_dir: str = "",
        aggregated_interaction: bool = True,
    ):
        self.train_epochs = list(train_epochs) if isinstance(train_epochs, list) else []
        self.test_epochs = list(test_epochs) if isinstance(test_epochs, list) else []
        if any(epoch <= 0 for epoch in self.train_epochs + self.test_epochs):
            raise ValueError("InteractionSaver: epochs are 1-based")
        self.checkpoint_dir = pathlib.Path(checkpoint_dir) / "interactions" if checkpoint_dir else pathlib.Path(
            "./interactions"
        )
        self.aggregated_interaction = aggregated_interaction

    @staticmethod
    def dump_interactions(logs: Interaction, mode: str, epoch: int, rank: int, dump_dir: str = "./interactions"):
        """Write ``logs`` to ``<dump_dir>/<mode>/epoch_<epoch>/interaction_gpu<rank>``."""
        directory = pathlib.Path(dump_dir) / mode / f"epoch_{epoch}"
        directory.mkdir(exist_ok=True, parents=True)
        torch.save(logs, directory / f"interaction_gpu{rank}")

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int):
        """Save the validation logs of a listed epoch."""
        if epoch in self.test_epochs:
            rank = self.trainer.distributed_context.rank
            self.dump_interactions(logs, "validation", epoch, rank, self.checkpoint_dir)

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int):
        """Save the training logs of a listed epoch."""
        if epoch in self.train_epochs:
            self.dump_interactions(logs, "train", epoch, self.trainer.distributed_context.rank, self.checkpoint_dir)
