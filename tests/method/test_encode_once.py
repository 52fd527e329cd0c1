"""``--captioner hf`` with frozen vision parts: each image goes through them once per training step, whatever the
number of its rollouts and of the scoring passes, for every family, with the gradients of a step that runs
them in every pass."""

import copy

import pytest
import torch
from torch import nn

from egg.zoo.discriminative_captioner.archs import CaptionerSender, DiscriminativeGame, FrozenReference, GroupBaseline
from egg.zoo.discriminative_captioner.captioners.hf_loading import load_hf_captioner
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss

from ..tiny_hf_captioners import BUILDERS, hf_opts, pixels_of

B, K = 3, 4


class RandomScores(nn.Module):
    """Scores ``[N, B]`` of every caption against the batch's images, the same in every run."""

    def forward(self, message, receiver_input, aux_input=None):
        return torch.randn(len(message), B, generator=torch.Generator().manual_seed(len(message)))


def first_computing_module(tower):
    """A module inside the vision tower that runs exactly when the tower computes (its first with parameters)."""
    return next(module for module in tower.modules() if module is not tower and next(module.parameters(False), None) is not None)


def one_step(captioner, encode_once, kl=False):
    """One training step (K = 4 rollouts, micro-batches of one image); returns the rows the vision tower
    computed in each of its calls and the gradients."""
    captioner.encode_once = encode_once
    assert captioner.fused is not None  # its one-time probe of the head runs before the step
    extra = dict(kl_reference=FrozenReference(captioner), kl_coeff=0.1, kl_estimator="exact") if kl else {}
    game = DiscriminativeGame(CaptionerSender(captioner), RandomScores(), DiscriminationLoss(temperature=0.1),
                              baseline_type=lambda: GroupBaseline(leave_one_out=True), rollouts_per_image=K,
                              micro_batch_size=1, **extra).train()  # fmt: skip
    calls = []
    hook = first_computing_module(captioner.vision_modules[0]).register_forward_hook(
        lambda module, args, output: calls.append(args[0].shape[0]))
    torch.manual_seed(0)
    loss, _ = game(pixels_of(captioner, B), torch.arange(B), torch.zeros(B, 1))
    loss.backward()
    hook.remove()
    grads = {name: p.grad.clone() for name, p in captioner.named_parameters() if p.grad is not None}
    return calls, grads


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_the_vision_parts_run_once_per_image_per_step_with_the_same_gradients(family, saved):  # noqa: F811
    captioner = load_hf_captioner(hf_opts(saved(family)))
    assert captioner.vision_modules, "the frozen vision parts are found by name"
    again = copy.deepcopy(captioner)
    calls, grads = one_step(captioner, encode_once=True)
    every_pass, expected = one_step(again, encode_once=False)
    per_image = every_pass[0] // (B * K)  # a row's entries in the tower's batch: 1, its crops, its patches
    assert calls == [per_image] * B  # each image once, a micro-batch's image per call
    # run in every pass: decoding, and per micro-batch the values' pass and the backward's
    assert len(every_pass) == 1 + 2 * B and sum(every_pass) == 3 * B * K * per_image
    assert grads.keys() == expected.keys() and grads
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", ["idefics3", "vit_gpt2"])
def test_the_kl_reference_reads_the_same_encoded_images(family, saved):  # noqa: F811
    captioner = load_hf_captioner(hf_opts(saved(family)))
    calls, grads = one_step(captioner, encode_once=True, kl=True)
    assert len(calls) == B and len(set(calls)) == 1  # the reference shares the frozen parts and their outputs


def test_trained_vision_runs_in_every_pass(saved):  # noqa: F811
    captioner = load_hf_captioner(hf_opts(saved("vit_gpt2"), hf_train_vision=True))
    assert captioner.vision_modules == ()


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_a_training_scoring_pass_has_no_dropout(family, saved):  # noqa: F811
    """OPT and BART keep dropout rates as plain attributes (functional dropout): they are switched off too, or
    the scoring pass would score other captions than those sampled (and the K = 4 step above would differ)."""
    captioner = load_hf_captioner(hf_opts(saved(family))).train()
    pixels = pixels_of(captioner, 2)
    tokens = captioner.sample(pixels).message
    first, second = (captioner.score(pixels, tokens)[0] for _ in range(2))
    assert torch.equal(first, second)
