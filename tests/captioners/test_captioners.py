"""ClipCap: caption masks, log-probabilities, decoding, and strict loading of the released file layout."""

import pytest
import torch

from egg.zoo.discriminative_captioner.captioners.base import caption_mask, sequence_log_prob
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapConfig, ClipCapModel
from egg.zoo.discriminative_captioner.captioners.clipcap_checkpoint import load_clipcap_state_dict
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..tiny_models import tiny_gpt2

STOP = 9


def test_caption_mask_stops_at_the_first_stop_token():
    tokens = torch.tensor([[4, 5, STOP, 6, STOP], [STOP, 1, 1, 1, 1], [4, 4, 4, 4, 4]])
    assert caption_mask(tokens, [STOP]).tolist() == [
        [True, True, True, False, False],
        [True, False, False, False, False],
        [True, True, True, True, True],  # no stop token: the caption ran to max_len
    ]


def test_log_prob_ignores_everything_after_the_stop_token():
    torch.manual_seed(0)
    tokens = torch.tensor([[1, 2, STOP, 3, 4]])
    logits = torch.randn(1, 5, 12)
    mask = caption_mask(tokens, [STOP])
    log_prob, entropy = sequence_log_prob(logits, tokens, mask)
    changed = logits.clone()
    changed[:, 3:] = torch.randn(1, 2, 12) * 10  # positions after the stop token
    assert torch.allclose(sequence_log_prob(changed, tokens, mask)[0], log_prob)
    expected = sum(torch.log_softmax(logits[0, t], -1)[tokens[0, t]] for t in range(3))
    assert log_prob.item() == pytest.approx(expected.item(), abs=1e-5)
    assert entropy.item() > 0


def test_rollout_log_prob_is_the_score_of_its_tokens_and_carries_gradients(clipcap):
    torch.manual_seed(0)
    features = torch.randn(4, 32)
    rollout = clipcap.rollout(features)
    assert rollout.message.shape == (4, clipcap.max_len)
    assert rollout.log_prob.requires_grad
    assert torch.allclose(rollout.log_prob, clipcap.score(features, rollout.message)[0], atol=1e-5)
    assert len(rollout.text) == 4 and all(isinstance(t, str) for t in rollout.text)
    assert ((rollout.length >= 1) & (rollout.length <= clipcap.max_len)).all()


def test_decoding_does_not_depend_on_the_rest_of_the_batch(clipcap):
    torch.manual_seed(1)
    features = torch.randn(6, 32)
    batch = clipcap.generate(features, num_beams=3).text
    alone = [clipcap.generate(features[i : i + 1], num_beams=3).text[0] for i in range(6)]
    assert batch == alone
    greedy = clipcap.rollout(features, greedy=True)
    assert greedy.text == clipcap.generate(features, num_beams=1).text


def test_mle_loss_decreases_when_trained(clipcap):
    torch.manual_seed(0)
    features = torch.randn(8, 32)
    captions = ["a red circle"] * 4 + ["digital art selected for the #"] * 4
    optimizer = torch.optim.Adam(clipcap.trainable_parameters(), lr=1e-2)
    first = clipcap.mle_loss(features, captions)
    for _ in range(20):
        loss = clipcap.mle_loss(features, captions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first.item() / 2


def released_layout(model):
    """A state dict as the released ClipCap files hold it: with the 2 legacy buffers per GPT-2 layer."""
    state = dict(model.state_dict())
    for i in range(model.gpt.config.n_layer):
        state[f"gpt.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        state[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


def test_released_layout_loads_strictly_and_legacy_buffers_are_dropped_by_name(tokenizer):
    source = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=32), tiny_gpt2(len(tokenizer), seed=1))
    target = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=32), tiny_gpt2(len(tokenizer), seed=2))
    state = released_layout(source)
    assert "gpt.transformer.h.0.attn.c_attn.bias" in state  # a real weight that a substring test would drop
    load_clipcap_state_dict(target, state)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_mismatching_checkpoints_are_rejected_with_the_offending_keys(tokenizer):
    model = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=32), tiny_gpt2(len(tokenizer)))
    state = released_layout(model)
    del state["clip_project.model.0.bias"]
    state["gpt.extra.weight"] = torch.zeros(1)
    with pytest.raises(UsageError, match=r"missing keys: clip_project\.model\.0\.bias.*unexpected keys: gpt\.extra"):
        load_clipcap_state_dict(model, state)
    wrong_prefix = ClipCapModel(ClipCapConfig(prefix_length=5, prefix_size=32), tiny_gpt2(len(tokenizer)))
    mismatch = r"shape mismatches: .*clip_project\.model\.0\.weight \(48, 32\) != \(80, 32\)"
    with pytest.raises(UsageError, match=mismatch):
        load_clipcap_state_dict(wrong_prefix, released_layout(model))
