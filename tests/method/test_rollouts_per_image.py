"""Several rollouts per image: K sampled captions of each image share its condition, are each
scored against the batch's candidates, and are baselined by the image's other rollouts (rloo) or their group
mean (with GRPO's standardisation)."""

import functools

import pytest
import torch
from torch import nn

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.archs import CaptionerSender, DiscriminativeGame, GroupBaseline, RetrieverReceiver
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..stubs import FixedCaptions

B, K = 3, 4


def GroupStubSender():
    """K fixed captions per image whose summed log-probabilities are parameters."""
    return FixedCaptions(torch.linspace(-1.0, -4.0, B * K), lengths=torch.full((B * K,), 4.0), width=4)


class TableReceiver(nn.Module):
    """Scores ``[B * K, B]`` from a fixed table, whatever the captions; two of image 2's rollouts tie."""

    def __init__(self):
        super().__init__()
        self.scores = torch.randn(B * K, B, generator=torch.Generator().manual_seed(0))
        self.scores[8:] = self.scores[8]  # image 2: all K rollouts score alike (no learning signal)

    def forward(self, message, receiver_input, aux_input=None):
        assert len(message) == B * K and receiver_input.shape[0] == B  # every rollout meets the batch's B images
        return self.scores


def group_game(baseline, standardize=False):
    game = DiscriminativeGame(GroupStubSender(), TableReceiver(), DiscriminationLoss(temperature=1.0),
                              baseline_type=baseline, standardize_advantage=standardize, rollouts_per_image=K)
    return game.train()  # fmt: skip


def expected_costs(game):
    labels = torch.arange(B).repeat_interleave(K)
    return -torch.log_softmax(game.receiver.scores, dim=1)[torch.arange(B * K), labels]  # [B * K]


@pytest.mark.parametrize("kind", ["rloo", "group", "group-standardized"])
def test_each_rollout_is_baselined_by_its_images_rollouts(kind):
    leave_one_out, standardize = kind == "rloo", kind.endswith("standardized")
    game = group_game(functools.partial(GroupBaseline, leave_one_out=leave_one_out), standardize)
    loss, interaction = game(torch.zeros(B, 2), torch.arange(B), torch.zeros(B, 2), {"image_index": torch.arange(B)})
    costs = expected_costs(game).view(B, K)
    if leave_one_out:  # by hand: the mean of the other three
        baseline = torch.stack([torch.stack([costs[i, [j for j in range(K) if j != k]].mean() for k in range(K)])
                                for i in range(B)])  # fmt: skip
    else:
        baseline = costs.mean(1, keepdim=True).expand(B, K)
    assert torch.allclose(interaction.aux["baseline"], baseline.reshape(-1))
    advantage = costs - baseline
    if standardize:
        advantage = advantage / (costs.std(dim=1, keepdim=True) + 1e-4)
    expected = (advantage.reshape(-1) * game.sender.log_prob).mean() + costs.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # logs: the group's reward spread, and image 2's rollouts all tied
    rewards = -costs
    assert torch.allclose(interaction.aux["group_reward_std"], rewards.std(dim=1).repeat_interleave(K))
    assert interaction.aux["identical_rewards"].tolist() == [0.0] * 8 + [1.0] * 4


def test_a_group_baseline_needs_several_rollouts_and_sampled_ones():
    with pytest.raises(UsageError, match="--baseline rloo compares an image's rollouts .* --rollouts_per_image 2"):
        get_opts(["--baseline", "rloo"])
    with pytest.raises(UsageError, match="--rollouts_per_image 4 needs --rollouts sample"):
        get_opts(["--rollouts_per_image", "4", "--rollouts", "greedy"])
    assert get_opts(["--rollouts_per_image", "4", "--baseline", "group"]).rollouts_per_image == 4


def test_the_k_rollouts_of_an_image_share_its_condition_and_are_scored_as_sampled(clipcap, retriever, monkeypatch):
    calls, condition = [], type(clipcap).condition_of

    def counted(self, features):
        calls.append(len(features))
        return condition(self, features)

    monkeypatch.setattr(type(clipcap), "condition_of", counted)
    torch.manual_seed(0)
    features = torch.randn(B, 32)
    game = DiscriminativeGame(CaptionerSender(clipcap), RetrieverReceiver(retriever), DiscriminationLoss(),
                              baseline_type=functools.partial(GroupBaseline, leave_one_out=True),
                              rollouts_per_image=K).train()  # fmt: skip
    rollout = game.sender(features, per_image=K)
    assert calls == [B] and rollout.message.shape[0] == B * K  # one condition per image, K captions each
    # the scoring pass, image by image, gives each rollout the log-probability it was sampled with
    rescored, _ = clipcap.score(features.repeat_interleave(K, dim=0), rollout.message)
    assert torch.allclose(rollout.log_prob, rescored, atol=1e-5)
    sampled = [set(map(tuple, rollout.message[i * K : (i + 1) * K].tolist())) for i in range(B)]
    assert any(len(captions) > 1 for captions in sampled)  # sampled, not K copies of one caption
    images = nn.functional.normalize(torch.randn(B, 32), dim=-1)
    loss, interaction = game(features, torch.arange(B), images, {"image_index": torch.arange(B)})
    loss.backward()
    assert interaction.aux["reward"].shape == (B * K,)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in clipcap.trainable_parameters())


def test_a_run_with_four_rollouts_per_image_and_rloo_trains(tiny_run_args, capsys):
    results = train.main(tiny_run_args + ["--rollouts_per_image", "4", "--baseline", "rloo"])
    assert 0 <= results["acc"] <= 1
    train_lines = [line for line in capsys.readouterr().out.splitlines() if '"mode": "train"' in line]
    assert '"group_reward_std"' in train_lines[0] and '"identical_rewards"' in train_lines[0]
