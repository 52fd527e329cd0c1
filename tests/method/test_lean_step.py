"""The lean training step against independent references: the fused LM-head log-probabilities against
``log_softmax`` and autograd, the sampler against the policy's softmax, rollouts against the scoring pass under
an adversarial ``generation_config``, the KL reference sharing frozen parts, and precision under autocast."""

import argparse
import copy

import pytest
import torch
from torch import nn
from transformers import GenerationConfig
from transformers.activations import NewGELUActivation

from egg.zoo.discriminative_captioner.archs import (
    CaptionerSender,
    DiscriminativeGame,
    FrozenReference,
    GreedyBaseline,
    RetrieverReceiver,
)
from egg.zoo.discriminative_captioner.captioners import base, fused
from egg.zoo.discriminative_captioner.captioners.base import PolicySampler, caption_mask, sequence_log_prob
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapConfig, ClipCapModel, ClipImageEncoder
from egg.zoo.discriminative_captioner.core import MeanBaseline
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform
from egg.zoo.discriminative_captioner.runtime.errors import UsageError
from egg.zoo.discriminative_captioner.runtime.precision import training_precision

from ..tiny_models import blip_opts, clipcap_opts, tiny_clip, tiny_gpt2


@pytest.mark.parametrize("bias", [False, True])
def test_fused_head_log_probs_and_gradients_match_log_softmax(monkeypatch, bias):
    monkeypatch.setitem(fused.VOCAB_SLICE, "cpu", 4)  # slices of 4, 4, 4 and 1 columns
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 8, dtype=torch.float64).float().requires_grad_()
    head = nn.Linear(8, 13, bias=bias)
    tokens = torch.randint(13, (3, 5))
    weights = torch.randn(2, 3, 5)  # upstream gradients of the log-probabilities and of the entropies

    log_prob, entropy = fused.head_token_log_probs(hidden, head, tokens)
    (weights[0] * log_prob + weights[1] * entropy).sum().backward()
    got = [hidden.grad, *[p.grad for p in head.parameters()]]

    hidden.grad = None
    head.zero_grad()
    log_probs = torch.log_softmax(head(hidden), dim=-1)  # [B, T, V]
    expected_log_prob = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    expected_entropy = -(log_probs.exp() * log_probs).sum(-1)
    (weights[0] * expected_log_prob + weights[1] * expected_entropy).sum().backward()
    torch.testing.assert_close(log_prob, expected_log_prob)
    torch.testing.assert_close(entropy, expected_entropy)
    for mine, reference in zip(got, [hidden.grad, *[p.grad for p in head.parameters()]]):
        torch.testing.assert_close(mine, reference)


def test_decoding_in_vocabulary_slices_matches_the_whole_head(monkeypatch, clipcap):
    monkeypatch.setitem(fused.VOCAB_SLICE, "cpu", 7)
    head, hidden = clipcap.lm_head, torch.randn(3, 2, clipcap.lm_head.in_features)
    expected = head(hidden)
    with fused.vocabulary_slices(clipcap, head):
        sliced = clipcap.model.gpt.lm_head
        assert sliced is not head and sliced.head is head
        torch.testing.assert_close(sliced(hidden), expected)
    assert clipcap.model.gpt.lm_head is head  # put back: the state dict and weight tying are untouched


def test_clipcap_runs_gpt2_with_torchs_fused_gelu_computing_the_same_function():
    gpt = tiny_gpt2(vocab_size=50)
    for block in gpt.transformer.h:  # the MLP's pre-activations spread over GELU's curved range
        block.mlp.c_fc.weight.data.mul_(20)
    reference = copy.deepcopy(gpt)  # transformers' gelu_new, seven elementwise operations
    model = ClipCapModel(ClipCapConfig(prefix_size=8, prefix_length=2), gpt)
    assert not any(isinstance(module, NewGELUActivation) for module in model.modules())
    assert model.gpt.config.activation_function == "gelu_pytorch_tanh"
    tokens = torch.randint(50, (3, 7))
    torch.testing.assert_close(model.gpt(tokens).logits, reference(tokens).logits, rtol=1e-5, atol=1e-5)


def test_unused_entropy_adds_nothing_to_the_gradient():
    torch.manual_seed(0)
    hidden, head, tokens = torch.randn(2, 3, 4, requires_grad=True), nn.Linear(4, 7), torch.randint(7, (2, 3))
    log_prob, entropy = fused.head_token_log_probs(hidden, head, tokens)
    log_prob.sum().backward()
    reference = hidden.detach().requires_grad_()
    torch.log_softmax(head(reference), -1).gather(-1, tokens.unsqueeze(-1)).sum().backward()
    torch.testing.assert_close(hidden.grad, reference.grad)


def test_scoring_pass_trimmed_to_the_longest_caption_matches_full_width_log_softmax(clipcap):
    features = torch.randn(4, 32)
    tokens = clipcap.rollout(features).message  # [B, max_len], padded after the stop token
    log_prob, entropy = clipcap.score(features, tokens)
    logits = clipcap.model(clipcap.condition(features), tokens)  # [B, max_len, V]: the untrimmed pass
    expected = sequence_log_prob(logits, tokens, caption_mask(tokens, clipcap.stop_ids))
    torch.testing.assert_close(log_prob, expected[0])
    torch.testing.assert_close(entropy, expected[1])


def test_policy_sampler_draws_from_the_softmax_of_its_scores():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0, float("-inf")]]).expand(20000, -1)
    scores = PolicySampler()(None, logits)
    drawn = scores.argmax(dim=1)  # greedy decoding picks the drawn token
    frequencies = torch.bincount(drawn, minlength=5).float() / drawn.numel()
    torch.testing.assert_close(frequencies, torch.softmax(logits[0], dim=0), atol=0.01, rtol=0)
    assert torch.equal(scores[scores != float("inf")], logits[scores != float("inf")])  # nothing else changed


def adversarial_generation_config(captioner, model):
    """Every field that would process the distribution transformers samples from."""
    stop, other = captioner.stop_ids[0], (captioner.stop_ids[0] + 3) % captioner.lm_head.out_features
    return GenerationConfig(repetition_penalty=5.0, no_repeat_ngram_size=1, encoder_repetition_penalty=3.0,
                            min_length=30, min_new_tokens=captioner.max_len, bad_words_ids=[[other]],
                            suppress_tokens=[stop], begin_suppress_tokens=[other + 1], forced_bos_token_id=other,
                            forced_eos_token_id=other, top_k=2, top_p=0.3, temperature=0.2, typical_p=0.5,
                            epsilon_cutoff=0.1, eta_cutoff=0.1, renormalize_logits=True,
                            exponential_decay_length_penalty=(1, 2.0), sequence_bias={(other,): 5.0},
                            do_sample=True, num_beams=1, length_penalty=3.0)  # fmt: skip


def captioner_and_inputs(kind, tiny_files):
    from egg.zoo.discriminative_captioner.captioners import build_captioner

    if kind == "clipcap":
        captioner = build_captioner(clipcap_opts(tiny_files))
        return captioner, captioner.model.gpt, torch.randn(6, 32)
    captioner = build_captioner(blip_opts(tiny_files))
    size = captioner.blip_config.vision_config.image_size
    return captioner, captioner.text_decoder, torch.randn(6, 3, size, size)


@pytest.mark.parametrize("kind", ["clipcap", "blip"])
@pytest.mark.parametrize("sample", [True, False])
def test_rollouts_ignore_the_models_generation_config(kind, sample, tiny_files):
    captioner, model, inputs = captioner_and_inputs(kind, tiny_files)
    model.generation_config = adversarial_generation_config(captioner, model)
    torch.manual_seed(0)
    condition = captioner.condition(inputs)
    out = captioner._generate(condition, sample=sample, output_logits=True, output_scores=True,
                              return_dict_in_generate=True)  # fmt: skip
    new = out.sequences[:, out.sequences.shape[1] - len(out.logits) :]  # [B, T] generated tokens
    logits, scores = torch.stack(out.logits, 1), torch.stack(out.scores, 1)  # [B, T, V] raw, as processed
    # The draw saw the raw logits: only the drawn token's score is changed (to +inf) when sampling.
    drawn = scores == float("inf")  # [B, T, V]
    assert (drawn.sum(-1) == int(sample)).all()
    assert torch.equal(scores[~drawn], logits[~drawn])
    mask = caption_mask(new, captioner.stop_ids)  # [B, T]
    per_token = torch.log_softmax(logits.float(), -1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [B, T]
    log_prob, _ = captioner.score(inputs, base.pad_to(new, captioner.max_len, new[0, -1].item()))
    torch.testing.assert_close((per_token * mask).sum(1), log_prob, atol=1e-4, rtol=1e-4)
    assert isinstance(model.generation_config.repetition_penalty, float)  # the model's own config is restored
    assert model.generation_config.repetition_penalty == 5.0


def test_kl_reference_copies_only_the_trainable_part(clipcap):
    clipcap.image_encoder = ClipImageEncoder(tiny_clip(), clip_transform(32))
    reference = FrozenReference(clipcap)
    assert reference.captioner.image_encoder is clipcap.image_encoder
    assert reference.captioner.model is not clipcap.model
    assert all(not p.requires_grad for p in reference.captioner.model.parameters())
    assert all(p.requires_grad for p in clipcap.model.parameters())


def count_calls(module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    setattr(module, name, counted)
    return calls


def test_blip_reference_and_greedy_baseline_reuse_the_policys_image_features(tiny_files, retriever):
    captioner, _, pixels = captioner_and_inputs("blip", tiny_files)
    reference = FrozenReference(captioner)
    vision_runs = count_calls(captioner.vision.vision_model, "forward")
    scoring_passes = count_calls(captioner, "_score")
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever), DiscriminationLoss(),
                              baseline_type=GreedyBaseline, kl_reference=reference, kl_coeff=0.1)  # fmt: skip
    images = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    loss, interaction = game(pixels, torch.arange(6), images)
    loss.backward()
    assert reference.captioner.vision is captioner.vision
    assert len(vision_runs) == 1  # the rollout's; the reference and the greedy baseline reuse it
    assert len(scoring_passes) == 1  # the rollout's own: the greedy baseline only decodes
    # The KL against a reference that recomputes its image features from scratch.
    fresh_reference = copy.deepcopy(reference.captioner)
    fresh_reference.vision.last = None
    tokens = scoring_passes[0][1]  # the rollout's captions (trimmed to the longest one)
    kl = captioner.score(pixels, tokens)[0] - fresh_reference.score(pixels.clone(), tokens)[0]
    torch.testing.assert_close(interaction.aux["kl"], kl.detach(), atol=1e-5, rtol=1e-5)


def game_for_precision(clipcap, retriever, precision="fp32"):
    return DiscriminativeGame(CaptionerSender(clipcap), RetrieverReceiver(retriever), DiscriminationLoss(),
                              baseline_type=MeanBaseline, kl_reference=FrozenReference(clipcap), kl_coeff=0.1,
                              precision=precision)  # fmt: skip


def test_retriever_reward_and_kl_reference_stay_fp32_under_autocast(clipcap, retriever):
    """EGG's --fp16 autocasts the whole game; here the CPU's bf16 autocast stands in for it."""
    features, images = torch.randn(4, 32), torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    game = game_for_precision(clipcap, retriever)
    seen = {}
    receiver_forward, sender_sample = game.receiver.forward, game.sender.sample

    def receiver(*args, **kwargs):
        seen["receiver autocast"] = torch.is_autocast_enabled("cpu")
        seen["scores"] = receiver_forward(*args, **kwargs)
        return seen["scores"]

    def sample(*args, **kwargs):
        seen["rollout"] = sender_sample(*args, **kwargs)
        return seen["rollout"]

    game.receiver.forward, game.sender.sample = receiver, sample
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, interaction = game(features, torch.arange(4), images)
    assert seen["receiver autocast"] is False
    assert seen["scores"].dtype == torch.float32 and interaction.aux["reward"].dtype == torch.float32
    # The KL reference's log-probability is the fp32 one.
    kl = interaction.aux["kl"]
    tokens = seen["rollout"].message
    reference_fp32 = game.kl_reference.captioner.score(features, tokens)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        policy = game.sender.captioner.score(features, tokens)[0]
    assert kl.dtype == torch.float32
    torch.testing.assert_close(kl, (policy - reference_fp32).detach())
    assert loss.dtype == torch.float32


def test_bf16_precision_runs_the_captioner_under_autocast_and_trains(clipcap, retriever):
    game = game_for_precision(clipcap, retriever, precision="bf16")
    layer = clipcap.model.gpt.transformer.h[0].mlp.c_fc
    dtypes = []
    layer.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    loss, interaction = game(torch.randn(4, 32), torch.arange(4), torch.nn.functional.normalize(torch.randn(4, 32)))
    loss.backward()
    assert torch.bfloat16 in dtypes
    assert interaction.aux["kl"].dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in clipcap.trainable_parameters())


def test_precision_is_decided_in_one_place():
    def opts(**values):
        return argparse.Namespace(**{"precision": "fp32", "fp16": False, "device": "cpu", **values})

    assert training_precision(opts(precision="bf16")) == "bf16"
    assert training_precision(opts(fp16=True)) == "fp32"  # EGG's --fp16 on a CPU: EGG trains in fp32 and warns
    cuda = opts(precision="fp16", device="cuda")
    assert training_precision(cuda) == "fp16"  # train.hand_to_egg gives EGG's Trainer fp16 (its GradScaler)
    assert training_precision(opts(fp16=True, device="cuda")) == "fp16"
    with pytest.raises(UsageError, match="needs a CUDA device"):
        training_precision(opts(precision="fp16"))
    with pytest.raises(UsageError, match="cannot be combined"):
        training_precision(opts(precision="bf16", fp16=True))
