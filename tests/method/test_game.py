"""The REINFORCE game: objective, baselines, frozen retriever, checkpoint contents."""

import pytest
import torch
from torch import nn

from egg.zoo.discriminative_captioner.archs import (
    CaptionerSender,
    DiscriminativeGame,
    FrozenReference,
    GreedyBaseline,
    RetrieverReceiver,
)
from egg.zoo.discriminative_captioner.core import MeanBaseline, NoBaseline
from egg.zoo.discriminative_captioner.evaluation.retrieval import strict_hits
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss

from ..stubs import FixedCaptions


def StubSender(batch_size):
    return FixedCaptions(torch.zeros(batch_size))


class StubReceiver(nn.Module):
    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def forward(self, message, receiver_input, aux_input=None):
        return self.scores


SCORES = torch.tensor([[0.9, 0.1], [0.5, 0.5]])  # caption 0 is sure of its target; caption 1 is torn
LABELS = torch.arange(2)


def stub_game(**kwargs):
    return DiscriminativeGame(StubSender(2), StubReceiver(SCORES), DiscriminationLoss(temperature=1.0), **kwargs)


def costs():
    return -torch.log_softmax(SCORES, dim=1).diagonal()


def test_objective_is_reinforce_with_a_running_mean_baseline_updated_only_in_training():
    game = stub_game(baseline_type=MeanBaseline)
    game.train()
    loss, interaction = game(None, LABELS)
    # first batch: the baseline is still 0, so the advantage is the cost itself
    assert loss.item() == pytest.approx(costs().mean().item())
    loss.backward()
    assert torch.allclose(game.sender.log_prob.grad, costs() / 2)
    assert interaction.aux["acc"].tolist() == [1.0, 0.0]  # caption 1 ties its target with a distractor: a miss

    game.sender.log_prob.grad = None
    game(None, LABELS)[0].backward()  # second batch: baseline = mean cost of the first
    assert torch.allclose(game.sender.log_prob.grad, (costs() - costs().mean()) / 2)
    assert game.baseline.baseline.n_points == 2

    game.eval()
    game(None, LABELS)
    assert game.baseline.baseline.n_points == 2  # evaluation leaves the baseline alone


def test_a_tie_is_a_miss_in_training_validation_and_the_final_test_alike():
    # caption 0 ties its target (index 0, the lower one: argmax would call it a hit) with a distractor
    tie = torch.tensor([[0.5, 0.5], [0.2, 0.9]])
    game = DiscriminativeGame(StubSender(2), StubReceiver(tie), DiscriminationLoss(temperature=1.0))
    for training in (True, False):
        game.train(training)
        assert game(None, LABELS)[1].aux["acc"].tolist() == [0.0, 1.0]  # evaluate's strict '>'


def test_no_baseline_and_standardized_advantages():
    game = stub_game(baseline_type=NoBaseline)
    game.train()
    game(None, LABELS)[0].backward()
    assert torch.allclose(game.sender.log_prob.grad, costs() / 2)

    game = stub_game(baseline_type=NoBaseline, standardize_advantage=True)
    game.train()
    game(None, LABELS)[0].backward()
    centred = costs() - costs().mean()
    assert torch.allclose(game.sender.log_prob.grad, centred / (centred.std() + 1e-4) / 2, atol=1e-5)


def test_loss_must_return_one_cost_per_sample():
    game = DiscriminativeGame(StubSender(2), StubReceiver(SCORES), lambda *args: (torch.zeros(()), {}))
    with pytest.raises(ValueError, match="one cost per sample"):
        game(None, LABELS)


def real_game(clipcap, retriever, **kwargs):
    sender = CaptionerSender(clipcap, num_beams=2)
    return DiscriminativeGame(sender, RetrieverReceiver(retriever), DiscriminationLoss(temperature=0.05), **kwargs)


def batch(size=4, seed=0):
    torch.manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(size, 32), dim=-1)
    return torch.randn(size, 32), torch.arange(size), images


def test_frozen_retriever_gets_no_gradients_and_stays_in_eval(clipcap, retriever):
    game = real_game(clipcap, retriever)
    game.train()
    assert not retriever.training and clipcap.training
    loss, _ = game(*batch())
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in retriever.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in clipcap.trainable_parameters())


def test_checkpoints_leave_frozen_parts_out_and_restore_the_rest(clipcap, retriever):
    game = real_game(clipcap, retriever)
    game.train()
    game(*batch())
    state = game.state_dict()
    assert not any(key.startswith("receiver.") for key in state)
    assert any(key.startswith("sender.captioner.model.gpt.") for key in state)

    other = real_game(copy_of(clipcap), retriever)
    other.load_state_dict(state)  # strict: the frozen retriever keeps its own weights
    assert other.baseline.baseline.n_points == 1
    assert torch.equal(other.baseline.baseline.mean_baseline, game.baseline.baseline.mean_baseline)
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(other.state_dict()[key], value), key


def copy_of(module):
    import copy

    duplicate = copy.deepcopy(module)
    for parameter in duplicate.parameters():
        parameter.data.normal_()
    return duplicate


def test_greedy_baseline_is_the_reward_of_the_greedy_caption(clipcap, retriever):
    game = real_game(clipcap, retriever, baseline_type=GreedyBaseline)
    game.train()
    sender_input, labels, images = batch()
    _, interaction = game(sender_input, labels, images)
    greedy = clipcap.rollout(sender_input, greedy=True)
    scores = retriever.encode_texts(greedy.text) @ images.T
    expected = -DiscriminationLoss(temperature=0.05)(None, None, None, scores, labels)[1]["reward"]
    assert torch.allclose(interaction.aux["baseline"], expected, atol=1e-5)


def test_kl_penalty_needs_a_reference_and_is_zero_before_any_update(clipcap, retriever):
    with pytest.raises(ValueError, match="reference"):
        real_game(clipcap, retriever, kl_coeff=0.1)
    game = real_game(clipcap, retriever, kl_reference=FrozenReference(clipcap), kl_coeff=0.1)
    game.train()
    _, interaction = game(*batch())
    assert torch.allclose(interaction.aux["kl"], torch.zeros(4), atol=1e-4)  # policy == reference so far
    assert not any(key.startswith("reference.") for key in game.state_dict())


def test_evaluation_decodes_with_beam_search(clipcap, retriever):
    game = real_game(clipcap, retriever)
    game.eval()
    sender_input, labels, images = batch()
    with torch.no_grad():
        loss, interaction = game(sender_input, labels, images)
    beam = clipcap.generate(sender_input, num_beams=2)
    scores = retriever.encode_texts(beam.text) @ images.T
    assert interaction.aux["acc"].tolist() == strict_hits(scores, labels).float().tolist()  # evaluate's rule
