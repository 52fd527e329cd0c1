"""Rewards on hand-computed examples."""

import math

import pytest
import torch

from egg.zoo.discriminative_captioner.losses import DiscriminationLoss

COSINE = torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.5, 0.5], [0.2, 0.4, 0.1]])  # [captions, candidates]
LABELS = torch.arange(3)


def call(loss):
    return loss(None, None, None, COSINE, LABELS, None)


def test_logprob_reward_is_the_log_softmax_of_the_target_at_the_temperature():
    cost, aux = call(DiscriminationLoss("logprob", temperature=0.1))
    # caption 0: scores 3, 1, 2 -> log(e^3 / (e^3 + e^1 + e^2))
    expected0 = 3 - math.log(math.exp(3) + math.exp(1) + math.exp(2))
    # caption 1: scores 0, 5, 5 -> log(1/2) after the max cancels out
    expected1 = 5 - math.log(1 + 2 * math.exp(5))
    assert aux["reward"][0].item() == pytest.approx(expected0, abs=1e-5)
    assert aux["reward"][1].item() == pytest.approx(expected1, abs=1e-5)
    assert torch.equal(cost, -aux["reward"])


def test_temperature_sharpens_the_distribution():
    warm = call(DiscriminationLoss("logprob", temperature=1.0))[1]["reward"]
    cold = call(DiscriminationLoss("logprob", temperature=0.01))[1]["reward"]
    assert warm[0].item() == pytest.approx(0.3 - math.log(math.exp(0.3) + math.exp(0.1) + math.exp(0.2)), abs=1e-6)
    assert cold[0] > warm[0]  # caption 0 ranks its target first: a colder softmax gives it more mass
    assert cold[2] < warm[2]  # caption 2 ranks a distractor first


def test_accuracy_reward_and_acc_count_strict_wins_only():
    cost, aux = call(DiscriminationLoss("accuracy"))
    # caption 0 ranks its target first; caption 1 ties its target with a distractor (a miss, as evaluate counts
    # it: argmax would give the target, the lower index, the hit); caption 2 loses
    assert aux["acc"].tolist() == [1.0, 0.0, 0.0]
    assert cost.tolist() == [-1.0, -0.0, -0.0]


@pytest.mark.parametrize("reward", ["logprob", "accuracy", "cosine"])
def test_acc_is_evaluates_strict_rule_whatever_the_reward_and_the_order_of_a_tie(reward):
    from egg.zoo.discriminative_captioner.evaluation.retrieval import strict_hits

    cosine = torch.tensor([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.2, 0.2, 0.2]])  # the target ties in every row
    labels = torch.tensor([0, 1, 2])
    aux = DiscriminationLoss(reward)(None, None, None, cosine, labels, None)[1]
    assert aux["acc"].tolist() == [0.0, 0.0, 0.0] == strict_hits(cosine, labels).float().tolist()


def test_cosine_reward_is_the_target_match_score_on_the_retrievers_scale():
    # the authors' SimilarityLoss: 100 x cosine for CLIP (logit_scale), the scale the logprob reward uses
    cost, aux = call(DiscriminationLoss("cosine", temperature=0.01))
    assert aux["reward"].tolist() == pytest.approx([30.0, 50.0, 10.0])
    assert call(DiscriminationLoss("cosine", temperature=0.5))[1]["reward"].tolist() == pytest.approx([0.6, 1.0, 0.2])


def test_bad_options_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="unknown reward"):
        DiscriminationLoss("bleu")
    with pytest.raises(ValueError, match="positive"):
        DiscriminationLoss(temperature=0)
    with pytest.raises(ValueError, match="expected scores"):
        DiscriminationLoss()(None, None, None, COSINE, torch.arange(2), None)
