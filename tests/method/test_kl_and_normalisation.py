"""The exact KL over the distribution rollouts are sampled from (image placeholders banned), and the authors'
length count for ``--log_prob_normalization mean``."""

import copy

import pytest
import torch

from egg.zoo.discriminative_captioner.archs import FrozenReference
from egg.zoo.discriminative_captioner.captioners.base import caption_mask
from egg.zoo.discriminative_captioner.captioners.hf_loading import load_hf_captioner

from ..tiny_hf_captioners import hf_opts, pixels_of
from .test_authors_protocol import period_clipcap


@pytest.mark.parametrize("family", ["idefics3", "paligemma", "qwen2_vl"])
def test_the_exact_kl_of_a_transformers_captioner_leaves_the_banned_tokens_out(family, saved):  # noqa: F811
    captioner = load_hf_captioner(hf_opts(saved(family))).train()
    assert captioner.ban is not None and (captioner.ban < 0).any()  # it has image placeholders
    reference = FrozenReference(captioner)
    with torch.no_grad():  # the policy moves away from the reference, most at the placeholders' logits
        for parameter in captioner.trainable_parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    pixels = pixels_of(captioner, 2)
    torch.manual_seed(0)
    captions = captioner.sample(pixels, per_image=2)
    kl = captioner.score_rows(captions, kl_reference=reference, kl_estimator="exact").kl

    # float64, by hand: KL(q || p) of the two softmaxes over the vocabulary without the banned tokens
    rows = captions.image_of_row
    tokens = captions.message
    mask = caption_mask(tokens, captioner.stop_ids)
    width = int(mask.sum(1).max())
    tokens, mask = tokens[:, :width], mask[:, :width]
    allowed = captioner.ban == 0
    with torch.no_grad():
        policy = captioner._logits(pixels[rows], tokens).double()[..., allowed].log_softmax(-1)
        fixed = reference.captioner._logits(pixels[rows], tokens).double()[..., allowed].log_softmax(-1)
    expected = ((fixed.exp() * (fixed - policy)).sum(-1) * mask).sum(1)
    torch.testing.assert_close(kl.double(), expected, rtol=1e-4, atol=1e-5)
    assert (expected > 1e-3).all()


def authors_divisor(tokens, eos_id, period_ids, max_len):
    """The authors' ``ClipCapModel.forward`` count, on the sequences their decoding makes of ``tokens``: an
    end-of-text token forced after a period (where it fits), end-of-text padding, then their msg_lengths."""
    rows = []
    for row in tokens.tolist():
        caption = []
        for token in row:
            caption.append(token)
            if token == eos_id:
                break
            if token in period_ids:
                if len(caption) < max_len:
                    caption.append(eos_id)  # their StopTokenLogitsProcessor
                break
        rows.append(caption + [eos_id] * (max_len - len(caption)))
    indices = torch.tensor(rows)  # [B, max_k]
    max_k = indices.size(1)
    extra_tokens = (indices == eos_id).cumsum(dim=1) > 0
    return (max_k - extra_tokens.sum(dim=1)).add(1).clamp(max=max_k).float()


def test_mean_normalisation_divides_by_the_authors_count_with_the_forced_end_of_text():
    captioner, tokenizer = period_clipcap(True, max_len=5)
    eos, period, word = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("."), tokenizer.convert_tokens_to_ids("a")
    ellipsis = tokenizer.convert_tokens_to_ids("...")
    tokens = torch.tensor([
        [word, word, period, eos, eos],  # a period: the forced end-of-text counts too
        [word, ellipsis, eos, eos, eos],  # any token with a period
        [word, word, eos, eos, eos],  # the model's own end-of-text: counted once
        [word, word, word, word, period],  # a period at the last position: no room for the forced one
        [word, word, word, word, word],  # ran out
    ])  # fmt: skip
    length = caption_mask(tokens, captioner.stop_ids).sum(1).float()
    assert length.tolist() == [3, 2, 3, 5, 5]
    divisor = captioner.mean_divisor(tokens, length)
    expected = authors_divisor(tokens, eos, set(captioner.stop_ids) - {eos}, captioner.max_len)
    assert divisor.tolist() == expected.tolist() == [4, 3, 3, 5, 5]
    # and the same count reaches the game's normalisation through the sampled captions
    torch.manual_seed(0)
    captions = copy.deepcopy(captioner).sample(torch.randn(4, 32), per_image=2)
    assert torch.equal(captions.divisor, captioner.mean_divisor(captions.message, captions.length))
