"""The single-process training loop, compatible with ``egg.core.Trainer``."""

import contextlib
import os
import pathlib
import uuid
import warnings
from typing import Iterable, List, Optional, Tuple

import torch

from .batch import Batch
from .callbacks import Callback, Checkpoint, CheckpointSaver
from .distributed import gather_tensor
from .interaction import Interaction
from .util import get_opts, move_to


def preemptive_checkpoint_dir(checkpoint_root) -> pathlib.Path:
    """``<checkpoint_root>/<SLURM job id>_<task id>`` (array job and task when set), created: upstream's layout."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if job is None or task is None:
        job = os.environ.get("SLURM_JOB_ID", uuid.uuid4())
        task = os.environ.get("SLURM_PROCID", 0)
    directory = pathlib.Path(checkpoint_root) / f"{job}_{task}"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Trainer:
    """Trains a game that returns ``(loss, Interaction)`` and drives the callbacks, as upstream EGG does.

    Validation frequency, update frequency, device, ``--fp16``, ``--checkpoint_dir`` and
    ``--load_from_checkpoint`` come from the options of the last ``init`` call.  ``callbacks=None`` means no
    callbacks (upstream adds no ConsoleLogger either); a CheckpointSaver is appended when ``--checkpoint_dir``
    is set and none was given.

    In a distributed run (torchrun or SLURM, see ``distributed.py``) the game is wrapped in
    ``DistributedDataParallel``, so gradients are averaged over the ranks; only the leader gets the automatic
    CheckpointSaver; with ``aggregate_interaction_logs`` every batch's logs are gathered from all ranks, and
    epoch losses are averaged over the ranks.
    """

    def __init__(
        self,
        game: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_data: Iterable,
        optimizer_scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
        validation_data: Optional[Iterable] = None,
        device: Optional[torch.device] = None,
        callbacks: Optional[List[Callback]] = None,
        grad_norm: Optional[float] = None,
        aggregate_interaction_logs: bool = True,
    ):
        opts = get_opts()
        if opts is None:
            raise RuntimeError("call init() before building a Trainer: it reads the parsed options")
        self.game = game
        self.optimizer = optimizer
        self.optimizer_scheduler = optimizer_scheduler
        self.train_data = train_data
        self.validation_data = validation_data
        self.validation_freq = opts.validation_freq
        self.device = opts.device if device is None else device
        self.update_freq = opts.update_freq
        self.should_stop = False
        self.start_epoch = 0  # overwritten when a checkpoint is loaded
        # A copy, so appending the automatic CheckpointSaver leaves the caller's list alone.
        self.callbacks = list(callbacks) if callbacks else []
        self.grad_norm = grad_norm
        self.aggregate_interaction_logs = aggregate_interaction_logs
        self.distributed_context = opts.distributed_context

        if opts.load_from_checkpoint is not None:
            print(f"# Initializing model, trainer, and optimizer from {opts.load_from_checkpoint}")
            self.load_from_checkpoint(opts.load_from_checkpoint)

        # As upstream, checkpoint_path exists only on the leader and only when no CheckpointSaver was passed
        # (None without a directory).
        has_saver = any(isinstance(callback, CheckpointSaver) for callback in self.callbacks)
        if self.distributed_context.is_leader and not has_saver:
            if opts.preemptable:
                if not opts.checkpoint_dir:
                    raise ValueError("--preemptable needs --checkpoint_dir")
                self.checkpoint_path = preemptive_checkpoint_dir(opts.checkpoint_dir)
                self.load_from_latest(self.checkpoint_path)
            else:
                self.checkpoint_path = None if opts.checkpoint_dir is None else pathlib.Path(opts.checkpoint_dir)
            if self.checkpoint_path:
                self.callbacks.append(
                    CheckpointSaver(checkpoint_path=self.checkpoint_path, checkpoint_freq=opts.checkpoint_freq)
                )

        self.game.to(self.device)
        if self.distributed_context.is_distributed:
            # The optimizer keeps the unwrapped parameters, whose gradients DDP averages in place.
            on_gpu = torch.device(self.device).type == "cuda"
            device_ids = [self.distributed_context.local_rank] if on_gpu else None
            self.game = torch.nn.parallel.DistributedDataParallel(
                self.game, device_ids=device_ids, find_unused_parameters=True
            )
        # Some optimizers allocate state before the first step, on the device the parameters had then.
        self.optimizer.state = move_to(self.optimizer.state, self.device)

        self.scaler = None
        if opts.fp16:
            if torch.device(self.device).type == "cuda":
                self.scaler = torch.amp.GradScaler("cuda")
            else:
                warnings.warn("--fp16 needs CUDA; training in full precision on the CPU", stacklevel=2)

    def _autocast(self):
        """fp16 autocast on CUDA when ``--fp16`` is active, otherwise a no-op context."""
        return torch.autocast("cuda", dtype=torch.float16) if self.scaler else contextlib.nullcontext()

    def _run_game(self, batch) -> Tuple[torch.Tensor, Interaction]:
        """Call the game on one DataLoader item (a Batch or a tuple of 1-4 inputs) moved to the device."""
        if not isinstance(batch, Batch):
            batch = Batch(*batch)
        return self.game(*batch.to(self.device))

    def eval(self, data: Optional[Iterable] = None) -> Tuple[float, Interaction]:
        """Mean loss and concatenated logs over ``data`` (default: the validation data), without gradients."""
        data = self.validation_data if data is None else data
        total_loss = 0.0
        interactions = []
        self.game.eval()
        with torch.no_grad():
            for batch_id, batch in enumerate(data):
                loss, interaction = self._run_game(batch)
                interaction = self._gathered(interaction).to("cpu")
                total_loss += loss
                for callback in self.callbacks:
                    callback.on_batch_end(interaction, loss, batch_id, is_training=False)
                interactions.append(interaction)
        if not interactions:
            raise RuntimeError("Trainer.eval: the data yielded no batches")
        return self._mean_over_ranks(total_loss / len(interactions)), Interaction.from_iterable(interactions)

    def _gathered(self, interaction: Interaction) -> Interaction:
        """The batch's logs from every rank, when distributed and ``aggregate_interaction_logs``."""
        if self.distributed_context.is_distributed and self.aggregate_interaction_logs:
            return Interaction.gather_distributed_interactions(interaction)
        return interaction

    def _mean_over_ranks(self, loss: torch.Tensor) -> float:
        """A rank's mean loss averaged over the ranks (equal shares), so every rank logs the global mean."""
        if self.distributed_context.is_distributed:
            # In float64, where W equal losses (a game that returns the whole batch's, on every rank) average to
            # themselves exactly; in float32 three copies of x often average to x's neighbour.
            loss = gather_tensor(loss.detach().reshape(1)).double().mean()
        return loss.item()

    def train_epoch(self) -> Tuple[float, Interaction]:
        """One pass over the training data; returns the mean loss and the concatenated logs."""
        total_loss = 0.0
        interactions = []
        self.game.train()
        self.optimizer.zero_grad()
        for batch_id, batch in enumerate(self.train_data):
            with self._autocast():
                loss, interaction = self._run_game(batch)
                if self.update_freq > 1:
                    # Games return mean losses, so accumulated gradients must be averaged, not summed.
                    loss = loss / self.update_freq

            if self.scaler:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()

            if batch_id % self.update_freq == self.update_freq - 1:
                self._optimizer_step()

            # As upstream, the epoch loss averages the (update_freq-scaled) losses that were backpropagated.
            total_loss += loss.detach()
            interaction = self._gathered(interaction).to("cpu")
            for callback in self.callbacks:
                callback.on_batch_end(interaction, loss, batch_id)
            interactions.append(interaction)

        if not interactions:
            raise RuntimeError("Trainer.train_epoch: the training data yielded no batches")
        if self.optimizer_scheduler:
            self.optimizer_scheduler.step()
        return self._mean_over_ranks(total_loss / len(interactions)), Interaction.from_iterable(interactions)

    def _optimizer_step(self):
        """Clip (after unscaling under fp16), step and clear the accumulated gradients."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.grad_norm:
            torch.nn.utils.clip_grad_norm_(self.game.parameters(), self.grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad()

    def train(self, n_epochs: int):
        """Train from ``start_epoch`` up to ``n_epochs``, validating every ``validation_freq`` epochs."""
        for callback in self.callbacks:
            callback.on_train_begin(self)

        for epoch in range(self.start_epoch + 1, n_epochs + 1):  # 1-based, as callbacks see it
            for callback in self.callbacks:
                callback.on_epoch_begin(epoch)

            train_loss, train_interaction = self.train_epoch()
            for callback in self.callbacks:
                callback.on_epoch_end(train_loss, train_interaction, epoch)

            validation_loss = validation_interaction = None
            if self.validation_data is not None and self.validation_freq > 0 and epoch % self.validation_freq == 0:
                for callback in self.callbacks:
                    callback.on_validation_begin(epoch)
                validation_loss, validation_interaction = self.eval()
                for callback in self.callbacks:
                    callback.on_validation_end(validation_loss, validation_interaction, epoch)

            if self.should_stop:
                for callback in self.callbacks:
                    callback.on_early_stopping(
                        train_loss, train_interaction, epoch, validation_loss, validation_interaction
                    )
                break

        for callback in self.callbacks:
            callback.on_train_end()

    def load(self, checkpoint: Checkpoint):
        """Restore game, optimizer, scheduler (when saved) and the epoch to resume after."""
        self.game.load_state_dict(checkpoint.model_state_dict)
        self.optimizer.load_state_dict(checkpoint.optimizer_state_dict)
        if checkpoint.optimizer_scheduler_state_dict:
            if self.optimizer_scheduler is None:
                raise RuntimeError(
                    "the checkpoint holds a learning-rate scheduler state but the Trainer has no optimizer_scheduler"
                )
            self.optimizer_scheduler.load_state_dict(checkpoint.optimizer_scheduler_state_dict)
        self.start_epoch = checkpoint.epoch

    def load_from_latest(self, path):
        """Load the newest ``*.tar`` in ``path`` (by change time, as upstream), if there is one."""
        files = sorted(pathlib.Path(path).glob("*.tar"), key=lambda file: file.stat().st_ctime)
        if files:
            self.load_from_checkpoint(files[-1])

    def load_from_checkpoint(self, path):
        """Load a checkpoint file written by CheckpointSaver and restore the trainer from it."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--load_from_checkpoint: no checkpoint file at {path}")
        print(f"# loading trainer state from {path}")
        # weights_only loading refuses unknown classes; Checkpoint is a plain NamedTuple and safe to allow.
        # Registered for good (as core.py does): the safe_globals() context would unregister it on exit.
        torch.serialization.add_safe_globals([Checkpoint])
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.load(checkpoint)
