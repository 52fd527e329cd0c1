"""Epoch batch samplers: an order that depends on (seed, epoch) only, and ranks that split each global batch."""

import pytest

from egg.zoo.discriminative_captioner.data.samplers import EpochBatchSampler
from egg.zoo.discriminative_captioner.runtime.errors import UsageError


def test_each_epoch_has_its_own_order_which_a_new_sampler_reproduces():
    sampler = EpochBatchSampler(50, 10, seed=3)
    epochs = {}
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        epochs[epoch] = list(sampler)
    assert epochs[1] != epochs[2]
    for batches in epochs.values():
        assert len(batches) == 5 and sorted(i for b in batches for i in b) == list(range(50))
    fresh = EpochBatchSampler(50, 10, seed=3)
    fresh.set_epoch(2)
    assert list(fresh) == epochs[2]  # a relaunch at epoch 2 replays epoch 2, not epoch 1


def test_start_batch_resumes_inside_an_epoch_once():
    sampler = EpochBatchSampler(40, 8, seed=0)
    full = list(sampler)
    sampler.start_batch = 3
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # the offset applies to one iteration only


def test_ranks_together_yield_the_single_process_batches():
    single = list(EpochBatchSampler(64, 8, seed=1))
    ranks = [list(EpochBatchSampler(64, 8, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single


@pytest.mark.parametrize("n, batch, world", [(10, 1, 1), (5, 10, 1), (30, 10, 3)])
def test_impossible_batches_are_refused(n, batch, world):
    with pytest.raises(UsageError):
        EpochBatchSampler(n, batch, seed=0, world_size=world)
