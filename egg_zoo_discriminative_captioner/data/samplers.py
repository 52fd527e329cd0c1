"""Batch samplers whose order is a pure function of (seed, epoch), so runs resume exactly and ranks agree.

A sampler cuts each epoch into *global* batches of ``batch_size`` image indices (every image of a global batch is
a target, the others its distractors).  With ``world_size`` ranks, each rank yields its contiguous share of every
global batch, so the ranks together see exactly the batches one process would.  ``set_epoch(e)`` picks the epoch
(1-based, as EGG's callbacks count); ``start_batch`` makes the next iteration begin later in the epoch (resuming
from a mid-epoch checkpoint) and is cleared once that epoch has been iterated.
"""

from typing import List

import torch
from torch.utils.data import Sampler

from ..runtime.errors import UsageError
from . import check_batch_size


def epoch_generator(seed, epoch):
    """A torch generator seeded from (seed, epoch) alone: the same epoch draws the same order on every launch."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class EpochBatchSampler(Sampler):
    """Shuffled global batches of ``batch_size`` (the last, incomplete one dropped), this rank's share of each."""

    def __init__(self, n_items, batch_size, seed, rank=0, world_size=1):
        check_batch_size(batch_size)
        if n_items < batch_size:
            raise UsageError(f"the training split has {n_items} images, fewer than --batch_size {batch_size}")
        if batch_size % world_size:
            raise UsageError(f"--batch_size {batch_size} must be divisible by the number of processes {world_size}")
        self.n_items = n_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 1
        self.start_batch = 0

    def set_epoch(self, epoch):
        """Selects the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def state_dict(self):
        """What a resumed run needs to replay this sampler's epochs: its seed and how it cuts them."""
        return {"seed": self.seed, "n_items": self.n_items, "batch_size": self.batch_size}

    def load_state_dict(self, state):
        """Takes the seed of the run being resumed (a relaunch may have drawn another ``--random_seed``)."""
        self.seed = state["seed"]

    def global_batches(self, epoch) -> List[List[int]]:
        """The epoch's global batches of image indices; subclasses change how batches are composed."""
        order = torch.randperm(self.n_items, generator=epoch_generator(self.seed, epoch)).tolist()
        n_batches = self.n_items // self.batch_size
        return [order[b * self.batch_size : (b + 1) * self.batch_size] for b in range(n_batches)]

    def __len__(self):
        return self.n_items // self.batch_size

    def __iter__(self):
        share = self.batch_size // self.world_size
        start, self.start_batch = self.start_batch, 0
        for batch in self.global_batches(self.epoch)[start:]:
            yield batch[self.rank * share : (self.rank + 1) * share]  # this rank's part of the global batch
