"""Micro-batches for the pass with gradients: the same captions, rewards, advantages, loss and update as one pass
over the whole batch, with each scoring pass holding at most m images' rollouts."""

import copy

import pytest
import torch

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.archs import (
    CaptionerSender,
    DiscriminativeGame,
    FrozenReference,
    GroupBaseline,
    RetrieverReceiver,
)
from egg.zoo.discriminative_captioner.captioners import build_captioner
from egg.zoo.discriminative_captioner.core import MeanBaseline
from egg.zoo.discriminative_captioner.experiment import build_experiment
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.options.parse import get_opts

from ..tiny_models import blip_opts

B, K = 6, 4


def game_of(clipcap, retriever, micro_batch_size, kl_estimator=None, **options):
    captioner = copy.deepcopy(clipcap)
    kl = {}
    if kl_estimator:
        kl = dict(kl_reference=FrozenReference(captioner), kl_coeff=0.5, kl_estimator=kl_estimator)
    baseline = options.pop("baseline_type", lambda: GroupBaseline(leave_one_out=True))
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever),
                              DiscriminationLoss(temperature=0.05), baseline_type=baseline,
                              rollouts_per_image=options.pop("rollouts_per_image", K),
                              micro_batch_size=micro_batch_size, **kl, **options)  # fmt: skip
    return game.train(), captioner


def batches(steps=3):
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(B, 32, generator=generator), dim=-1)
    return [(torch.randn(B, 32, generator=generator), torch.arange(B), images) for _ in range(steps)]


def train_steps(game, captioner, steps=3, scale=1.0):
    """SGD steps from the same random stream; returns each step's captions, loss and logs, and the gradients."""
    optimizer = torch.optim.SGD(captioner.trainable_parameters(), lr=0.5)
    record, sample = [], game.sender.sample
    for step, batch in enumerate(batches(steps)):
        torch.manual_seed(step)
        sampled = []
        game.sender.sample = lambda *args, **kwargs: sampled.append(sample(*args, **kwargs)) or sampled[-1]
        loss, interaction = game(*batch)
        (loss * scale).backward()  # a GradScaler's or --update_freq's factor reaches the recomputed passes
        grads = [p.grad.clone() for p in captioner.trainable_parameters()]
        optimizer.step()
        optimizer.zero_grad()
        record.append((sampled[0].message, loss.detach(), interaction.aux, grads))
    return record


def assert_same_run(chunked, whole):
    for (message, loss, aux, grads), (message_, loss_, aux_, grads_) in zip(chunked, whole):
        assert torch.equal(message, message_)  # the same captions, drawn from the same stream
        torch.testing.assert_close(loss, loss_, rtol=1e-5, atol=1e-6)
        for key in ("reward", "baseline", "sender_entropy", "kl"):
            if key in aux_:
                torch.testing.assert_close(aux[key], aux_[key], rtol=1e-5, atol=1e-5)
        for got, expected in zip(grads, grads_):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kl_estimator", [None, "sampled", "exact"])
@pytest.mark.parametrize("micro_batch_size", [1, 4])
def test_micro_batches_give_the_whole_batchs_captions_loss_and_gradients(clipcap, retriever, kl_estimator,
                                                                         micro_batch_size):  # fmt: skip
    whole = train_steps(*game_of(clipcap, retriever, None, kl_estimator, entropy_coeff=0.01))
    chunked = train_steps(*game_of(clipcap, retriever, micro_batch_size, kl_estimator, entropy_coeff=0.01))
    assert_same_run(chunked, whole)
    assert any(g.abs().sum() > 0 for g in whole[-1][3])


def test_mean_normalisation_standardisation_and_a_scaled_backward(clipcap, retriever):
    options = dict(log_prob_normalization="mean", standardize_advantage=True, baseline_type=MeanBaseline,
                   rollouts_per_image=1)  # fmt: skip
    whole = train_steps(*game_of(clipcap, retriever, None, **options), scale=1024.0)
    chunked = train_steps(*game_of(clipcap, retriever, 2, **options), scale=1024.0)
    assert_same_run(chunked, whole)


def test_each_pass_with_gradients_holds_at_most_a_micro_batch(clipcap, retriever, monkeypatch):
    game, captioner = game_of(clipcap, retriever, 2, "exact")
    rows, hidden = [], type(captioner)._hidden

    def recorded(self, condition, tokens):
        if torch.is_grad_enabled() and self is captioner:
            rows.append(tokens.shape[0])
        return hidden(self, condition, tokens)

    monkeypatch.setattr(type(captioner), "_hidden", recorded)
    loss, _ = game(*batches(1)[0])
    assert rows == []  # the forward scores without gradients: the values the advantages need
    loss.backward()
    assert rows == [2 * K] * (B // 2)  # then one pass with gradients per micro-batch, in the backward


def test_the_condition_is_computed_once_and_its_gradient_reaches_the_mapper(clipcap, retriever):
    game, captioner = game_of(clipcap, retriever, 1)
    loss, _ = game(*batches(1)[0])
    loss.backward()
    mapper = list(captioner.model.clip_project.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mapper)


def test_rollout_batches_decode_a_few_images_at_a_time_from_the_same_distribution(clipcap, retriever, monkeypatch):
    game, captioner = game_of(clipcap, retriever, None, rollout_batch_size=2)
    decoded, decode = [], type(captioner)._decode

    def recorded(self, condition, **settings):
        decoded.append(condition.shape[0])
        return decode(self, condition, **settings)

    monkeypatch.setattr(type(captioner), "_decode", recorded)
    loss, interaction = game(*batches(1)[0])
    assert decoded == [2 * K] * (B // 2) and interaction.aux["reward"].shape[0] == B * K
    # greedy decoding draws nothing: decoded in chunks or at once, the captions are the same
    greedy = CaptionerSender(captioner, rollouts="greedy")
    features = batches(1)[0][0]
    assert torch.equal(greedy.sample(features, images_per_decode=2).message, greedy.sample(features).message)


@pytest.mark.parametrize("bounds", [dict(micro_batch_size=2), dict(micro_batch_size=4, rollout_batch_size=2)])
def test_the_frozen_image_encoder_reads_the_smaller_bound_of_images_at_a_time(bounds, tiny_files, retriever):
    """BLIP's frozen vision encoder runs before decoding: in a step with micro-batches (or decoding a few images
    at a time) it reads that many images per pass, and its features are those of one pass over the batch."""
    captioner = build_captioner(blip_opts(tiny_files))
    size = captioner.blip_config.vision_config.image_size
    pixels = torch.randn(B, 3, size, size)
    whole = captioner.vision.vision_model(pixel_values=pixels).last_hidden_state
    passes = []
    captioner.vision.vision_model.register_forward_hook(lambda module, args, kwargs, out: passes.append(
        kwargs["pixel_values"].shape[0]), with_kwargs=True)  # fmt: skip
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever),
                              DiscriminationLoss(temperature=0.05), rollouts_per_image=1, **bounds).train()
    game(pixels, torch.arange(B), torch.nn.functional.normalize(torch.randn(B, 32), dim=-1))[0].backward()
    assert passes == [2] * (B // 2)  # once per image in the step, two images per pass
    torch.testing.assert_close(captioner.vision.last[2], whole, rtol=1e-5, atol=1e-6)


def test_a_run_with_micro_batches_ends_with_the_parameters_of_one_without(tiny_run_args, tmp_path):
    """Through the command line, 12 SGD updates with the exact KL and hard distractors; the checkpoints compared
    with each other and with the starting captioner (a run at learning rate 0).  Greedy rollouts and a moderate
    learning rate: over many updates rounding differences grow, and a sampled token that flips on one sends
    the runs apart (the K = 4 sampled steps above compare three updates)."""
    args = tiny_run_args + ["--rollouts", "greedy", "--kl_coeff", "0.1", "--kl_estimator", "exact",
                            "--hard_distractors", "3", "--optimizer", "sgd", "--random_seed", "2",
                            "--validation_freq", "0"]  # fmt: skip
    runs = {"whole": ["--lr", "0.01"], "micro": ["--lr", "0.01", "--micro_batch_size", "7"]}
    results = {name: train.main(args + extra + ["--checkpoint_dir", str(tmp_path / name)])
               for name, extra in runs.items()}  # fmt: skip
    states = {name: torch.load(tmp_path / name / "final.tar", weights_only=False).model_state_dict for name in runs}
    start = build_experiment(get_opts(args)).captioner.state_dict()  # the pretrained captioner the runs started at
    difference = moved = 0.0
    for key, value in start.items():
        key = f"sender.captioner.{key}"
        if torch.is_tensor(value) and value.is_floating_point() and key in states["whole"]:
            difference = max(difference, (states["micro"][key] - states["whole"][key]).abs().max().item())
            moved = max(moved, (states["whole"][key] - value).abs().max().item())
    assert difference < 1e-5 and moved > 1e-3, (difference, moved)
    assert results["micro"]["acc"] == results["whole"]["acc"]
