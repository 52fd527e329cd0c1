"""Advantages against float64 references: group baselines (RLOO, GRPO) with and without standardisation, the
whole batch's standardisation, one running mean per retriever, and the KL inside or outside the baseline."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from egg.zoo.discriminative_captioner.archs import DiscriminativeGame, GroupBaseline
from egg.zoo.discriminative_captioner.baselines import SPREAD_EPSILON, StepBatch
from egg.zoo.discriminative_captioner.core import MeanBaseline, NoBaseline
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.runtime.pretrained import FrozenModule

from ..stubs import FixedCaptions
from .test_game import StubReceiver


def reference_advantages(costs, k, leave_one_out, standardize):
    """The float64 advantages of ``costs`` [B * K] (numpy, written apart from the package)."""
    groups = np.asarray(costs, dtype=np.float64).reshape(-1, k)
    if leave_one_out:
        baseline = (groups.sum(axis=1, keepdims=True) - groups) / (k - 1)
    else:
        baseline = groups.mean(axis=1, keepdims=True)
    advantage = groups - baseline
    if standardize:
        advantage = advantage / (groups.std(axis=1, ddof=1, keepdims=True) + SPREAD_EPSILON)
    return advantage.reshape(-1)


def group_advantages(costs, k, leave_one_out, standardize):
    baseline = GroupBaseline(leave_one_out=leave_one_out)
    baseline.standardize = standardize
    return baseline.advantages(costs, StepBatch(k, lambda values: values, None))[0]


def costs_of(kind, k, images=2000, seed=0):
    """float32 costs in [0, 5) of ``images`` groups of K: all equal, a float-noise apart, or different."""
    generator = torch.Generator().manual_seed(seed)
    base = (torch.rand(images, 1, generator=generator) * 5).expand(images, k)
    if kind == "identical":
        return base.reshape(-1).clone()
    if kind == "noise":  # at most 1e-6 relative apart
        noise = (torch.rand(images, k, generator=generator) * 2 - 1) * 1e-6
        return (base * (1 + noise)).reshape(-1).float()
    return (torch.rand(images * k, generator=generator) * 5).float()


@pytest.mark.parametrize("k", range(2, 9))
@pytest.mark.parametrize("leave_one_out", [True, False], ids=["rloo", "group"])
@pytest.mark.parametrize("standardize", [True, False], ids=["standardized", "plain"])
def test_group_advantages_match_a_float64_reference(k, leave_one_out, standardize):
    for kind in ("identical", "noise", "different"):
        costs = costs_of(kind, k)
        advantage = group_advantages(costs, k, leave_one_out, standardize)
        expected = reference_advantages(costs.numpy(), k, leave_one_out, standardize)
        if kind == "identical":  # no learning signal: exactly nothing (the float32 arithmetic gave up to 47.7)
            assert (advantage == 0).all(), (kind, advantage.abs().max())
            continue
        np.testing.assert_allclose(advantage.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=kind)
        if kind == "noise":  # rewards a rounding apart: a negligible advantage
            assert advantage.abs().max() < 0.1


def test_an_identical_batch_standardises_to_zero_and_a_varied_one_to_unit_variance():
    game = DiscriminativeGame(FixedCaptions(torch.zeros(4)), None, None, baseline_type=MeanBaseline,
                              standardize_advantage=True)  # fmt: skip
    batch = StepBatch(1, lambda values: values, None)
    same = torch.full((64,), 2.3718)
    advantage, _ = game.baseline.advantages(same, batch)
    assert (advantage == 0).all()
    varied = torch.rand(64, generator=torch.Generator().manual_seed(1)) * 5
    advantage, _ = game.baseline.advantages(varied, batch)
    values = varied.double().numpy()
    expected = (values - values.mean()) / (values.std(ddof=1) + SPREAD_EPSILON)
    np.testing.assert_allclose(advantage.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert game.baseline.baseline.n_points == 2  # the running mean learnt from both batches all the same


class TwoRetrievers(nn.Module):
    """Scores ``[2, N, C]`` of two retrievers whose rewards have different scales."""

    def __init__(self, n):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.scores = torch.stack([torch.randn(n, n, generator=generator), 20 * torch.randn(n, n, generator=generator)])

    def forward(self, message, receiver_input, aux_input=None):
        return self.scores


def test_alternating_retrievers_each_have_their_own_running_mean():
    n = 4
    receiver = TwoRetrievers(n)
    game = DiscriminativeGame(FixedCaptions(torch.zeros(n)), receiver, DiscriminationLoss(temperature=1.0),
                              baseline_type=MeanBaseline, retriever_mix="alternate").train()  # fmt: skip
    labels = torch.arange(n)
    costs = [-torch.log_softmax(scores, dim=1).diagonal() for scores in receiver.scores]  # each retriever's
    logged = [game(torch.zeros(n, 1), labels)[1].aux["baseline"] for _ in range(4)]
    # turns 0, 1, 0, 1: each retriever's first batch meets a baseline of 0, its second its own first mean
    assert logged[0].item() == 0 and logged[1].item() == 0
    torch.testing.assert_close(logged[2], costs[0].mean().reshape(1))
    torch.testing.assert_close(logged[3], costs[1].mean().reshape(1))
    state = game.state_dict()
    other = DiscriminativeGame(FixedCaptions(torch.zeros(n)), TwoRetrievers(n), DiscriminationLoss(temperature=1.0),
                               baseline_type=MeanBaseline, retriever_mix="alternate")  # fmt: skip
    other.load_state_dict(state)
    assert sorted(other.baselines) == [0, 1]
    assert other.baselines[1].baseline.n_points == 2


class KLStub(FixedCaptions):
    """Fixed captions with a fixed KL to the reference per caption."""

    def __init__(self, log_prob, kl):
        super().__init__(log_prob)
        self.kl = torch.as_tensor(kl, dtype=torch.float)

    def score(self, captions, rows=None, kl_reference=None, kl_estimator="exact"):
        scores = super().score(captions, rows)
        rows = torch.arange(len(captions.message)) if rows is None else rows
        return scores._replace(kl=None if kl_reference is None else self.kl[rows])


class NoReference(FrozenModule):
    """A reference the stub never asks: the KL comes with its captions."""


@pytest.mark.parametrize("inside", [True, False], ids=["inside", "outside"])
def test_the_kl_sits_inside_the_baseline_or_is_added_after_it(inside):
    scores, kl, coeff = torch.tensor([[0.9, 0.1], [0.5, 0.5]]), torch.tensor([0.3, 1.2]), 0.5
    sender = KLStub(torch.zeros(2), kl)
    game = DiscriminativeGame(sender, StubReceiver(scores), DiscriminationLoss(temperature=1.0),
                              baseline_type=MeanBaseline, kl_reference=NoReference(), kl_coeff=coeff,
                              kl_in_baseline=inside).train()  # fmt: skip
    cost = -torch.log_softmax(scores, dim=1).diagonal()
    game(None, torch.arange(2))
    sender.log_prob.grad = None
    loss, interaction = game(None, torch.arange(2))  # the second batch meets the first one's running mean
    loss.backward()
    first_mean = (cost + coeff * kl).mean() if inside else cost.mean()  # what the baseline has seen
    torch.testing.assert_close(interaction.aux["baseline"], first_mean.reshape(1))
    expected = cost + coeff * kl - first_mean  # the same advantage either way, against another baseline
    torch.testing.assert_close(sender.log_prob.grad, expected / 2)


def test_without_kl_the_baseline_sees_the_task_cost_alone():
    game = DiscriminativeGame(FixedCaptions(torch.zeros(2)), StubReceiver(torch.eye(2)),
                              DiscriminationLoss(temperature=1.0), baseline_type=functools.partial(NoBaseline))
    game.train()
    _, interaction = game(None, torch.arange(2))
    assert "kl" not in interaction.aux and interaction.aux["baseline"].tolist() == [0.0]
