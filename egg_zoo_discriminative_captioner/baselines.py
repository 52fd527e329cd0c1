"""How a batch's costs become REINFORCE advantages: each baseline owns its rule, the game only asks for them.

A baseline's ``advantages(cost, batch)`` takes the per-rollout costs ``[N]`` (the negative rewards, shaped by the
KL when it sits inside the baseline) and returns ``(advantage [N], baseline)``, both detached, the baseline as
logged (``[1]`` for a running mean, ``[N]`` otherwise).  It learns from the costs (a running mean) in the same
call, which the game makes in training only.  ``batch`` (``StepBatch``) is what a baseline may need of the step
beyond the costs: the number of rollouts per image, the global batch of a data-parallel run, and the greedy
captions' costs, computed only when asked for.

- ``EggBaseline``: one of EGG's ``update`` / ``predict`` baselines (``MeanBaseline``, ``NoBaseline``): advantage
  ``cost - predict(cost)``, then ``update`` with the global batch's costs.
- ``GreedyBaseline``: the cost of the greedy caption of the same image (self-critical).
- ``GroupBaseline``: the image's other rollouts (RLOO, "new self-critical") or all of them (GRPO's group mean).

With ``standardize`` an advantage is divided by a spread: the group baselines by their group's standard deviation
of costs (GRPO), the others rescale the global batch's advantages to zero mean and unit variance.  The
arithmetic runs in float64 and the spread gets TRL's epsilon of 1e-4, so an image whose K rewards are equal gets
an advantage of exactly 0, and rewards that differ by float noise a negligible one (in float32 the group's mean
lies a rounding step away from equal rewards, their standard deviation is 0, and dividing by ``0 + 1e-8`` made
advantages of 10 to 50 out of nothing).
"""

from typing import Callable, NamedTuple

import torch

SPREAD_EPSILON = 1e-4  # TRL's GRPO: advantages / (std + 1e-4)


class StepBatch(NamedTuple):
    """What a baseline may read of the step besides the costs."""

    group_size: int  # K rollouts per image: image i's are rows i*K ... i*K + K - 1
    whole_batch: Callable  # a per-row tensor -> the global batch's (data-parallel runs; itself on one process)
    greedy_costs: Callable  # () -> each rollout's image's greedy caption cost [N] (decodes only when called)


class Baseline:
    """Turns costs into advantages: ``cost - baseline``, standardised with ``standardize``."""

    standardize = False
    min_group_size = 1  # rollouts per image it needs

    def advantages(self, cost, batch):
        """``(advantage [N], baseline as logged)``, detached; learns from ``cost`` (training only)."""
        cost = cost.detach()
        baseline = self.predict(cost, batch)  # [1] or [N]
        advantage = cost.double() - baseline.double()  # [N]
        if self.standardize:
            advantage = self.standardized(advantage, cost, batch)
        self.observe(cost, batch)
        return advantage.to(cost.dtype), baseline

    def predict(self, cost, batch):
        raise NotImplementedError

    def observe(self, cost, batch):
        """Learns from a training batch's costs; most baselines keep nothing."""

    def standardized(self, advantage, cost, batch):
        """The global batch's advantages rescaled to zero mean and unit variance (float64)."""
        whole = batch.whole_batch(advantage)  # [N_global]
        return (advantage - whole.mean()) / (whole.std() + SPREAD_EPSILON)

    def state(self):
        """What a checkpoint keeps (plain values)."""
        return {}

    def load_state(self, state):
        """Restores what ``state`` returned."""


class EggBaseline(Baseline):
    """One of EGG's baselines (``update`` / ``predict``: ``MeanBaseline``, ``NoBaseline``), updated with the
    global batch's costs, so that every rank of a data-parallel run holds the single-process baseline."""

    def __init__(self, baseline):
        self.baseline = baseline

    def predict(self, cost, batch):
        # A copy: upstream EGG's MeanBaseline updates the tensor it returned in place, in update().
        return torch.as_tensor(self.baseline.predict(cost), device=cost.device).detach().clone().reshape(-1)

    def observe(self, cost, batch):
        self.baseline.update(batch.whole_batch(cost))

    def state(self):
        return dict(vars(self.baseline))

    def load_state(self, state):
        vars(self.baseline).update(state)


class GreedyBaseline(Baseline):
    """Self-critical baseline: the cost of the greedy caption of the same image, decoded for every batch."""

    def predict(self, cost, batch):
        return batch.greedy_costs()


class GroupBaseline(Baseline):
    """Each rollout's baseline from the other rollouts of its image (``rollouts_per_image`` K > 1): the mean
    cost of the other K - 1 (``leave_one_out``, RLOO / "new self-critical") or of all K (GRPO's group mean).
    Standardised, an advantage is divided by the standard deviation of its group's costs (GRPO)."""

    min_group_size = 2

    def __init__(self, leave_one_out=True):
        self.leave_one_out = leave_one_out

    def predict(self, cost, batch):
        k = batch.group_size
        groups = cost.double().view(-1, k)  # [B, K]; float64: equal costs give a baseline equal to them
        if self.leave_one_out:
            baseline = (groups.sum(1, keepdim=True) - groups) / (k - 1)
        else:
            baseline = groups.mean(1, keepdim=True).expand_as(groups)
        return baseline.reshape(-1)  # [B * K]

    def standardized(self, advantage, cost, batch):
        k = batch.group_size
        spread = cost.double().view(-1, k).std(dim=1).repeat_interleave(k)  # [B * K]
        return advantage / (spread + SPREAD_EPSILON)


def as_baseline(baseline):
    """A game's baseline from ``baseline_type()``: this module's own, or one of EGG's wrapped in ``EggBaseline``."""
    return baseline if isinstance(baseline, Baseline) else EggBaseline(baseline)
