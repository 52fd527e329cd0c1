"""The static-cache decoding loop (``--decoder static|compiled``) against transformers' ``generate``.

Checked against independent references: ``generate``'s own tokens under the same random stream (and the stream
it leaves behind), the scoring pass's log-probabilities of the emitted tokens, and the top-level operators it
dispatches per token, counted by the torch profiler.
"""

import functools
import warnings
from unittest import mock

import pytest
import torch

from egg.zoo.discriminative_captioner.captioners import static_decoding
from egg.zoo.discriminative_captioner.captioners.base import caption_mask
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel
from egg.zoo.discriminative_captioner.captioners.static_decoding import StaticDecoder, unsupported

from ..tiny_models import tiny_gpt2


def captioner(tokenizer, decoding, max_len=12, any_period=True, seed=0, stop_boost=0.0):
    """A tiny ClipCap; ``stop_boost`` moves GPT-2's last hidden states towards the '.' token's embedding, so that
    its random weights stop some captions early (beam search otherwise runs every one to ``max_len``)."""
    torch.manual_seed(seed)
    model = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=32), tiny_gpt2(len(tokenizer), seed=seed))
    result = ClipCapCaptioner(model, tokenizer, image_encoder=None, max_len=max_len, stop_at_any_period=any_period)
    period = model.gpt.transformer.wte.weight[result.period_id].detach()
    model.gpt.transformer.ln_f.bias.data += stop_boost * period / period.norm()
    result.decoder = decoding
    return result


def rollout_tokens(model, features, seed, **options):
    """A rollout's tokens and the next draw of the random stream after it."""
    torch.manual_seed(seed)
    tokens = model.rollout(features, **options).message
    return tokens, torch.rand(4)


@pytest.mark.parametrize("options", [{}, {"greedy": True}, {"per_image": 3}], ids=["sampled", "greedy", "K=3"])
def test_static_rollouts_are_generates_tokens_under_the_same_random_stream(tokenizer, options):
    generate, static = captioner(tokenizer, "generate"), captioner(tokenizer, "static")
    features = torch.randn(16, 32)
    stopped = 0
    for seed in range(3):
        expected, after_expected = rollout_tokens(generate, features, seed, **options)
        tokens, after = rollout_tokens(static, features, seed, **options)
        assert torch.equal(tokens, expected)
        assert torch.equal(after, after_expected)  # as many draws as generate made
        stopped += int((caption_mask(tokens, static.stop_ids).sum(1) < static.max_len).sum())
    assert stopped > 0  # some captions stopped early, so stopping and padding were exercised


@pytest.mark.parametrize("beams", [2, 5])
@pytest.mark.parametrize("any_period", [False, True], ids=["stop-at-period", "stop-at-any-period"])
def test_static_beam_search_finds_generates_beams(tokenizer, beams, any_period):
    """Tokens of ``generate``'s beam search, with few and many stop tokens (the kept continuations grow with
    them), captions that stop early and ones that run to ``max_len``."""
    ended = stopped = 0
    for seed in range(3):
        generate = captioner(tokenizer, "generate", max_len=10, any_period=any_period, seed=seed, stop_boost=5.0)
        static = captioner(tokenizer, "static", max_len=10, any_period=any_period, seed=seed, stop_boost=5.0)
        features = torch.randn(12, 32)
        expected = generate.generate(features, num_beams=beams).message
        tokens = static.generate(features, num_beams=beams).message
        assert torch.equal(tokens, expected), seed
        lengths = caption_mask(tokens, static.stop_ids).sum(1)
        ended, stopped = ended + int((lengths == 10).sum()), stopped + int((lengths < 10).sum())
    assert ended and stopped


def test_beam_rollouts_decode_with_the_static_beam_search(tokenizer):
    generate, static = captioner(tokenizer, "generate"), captioner(tokenizer, "static")
    features = torch.randn(6, 32)
    expected = generate.rollout(features, num_beams=3)
    got = static.rollout(features, num_beams=3)
    assert torch.equal(got.message, expected.message)
    torch.testing.assert_close(got.log_prob, expected.log_prob, rtol=0, atol=0)


@pytest.mark.parametrize("sample", [True, False], ids=["sampled", "greedy"])
def test_the_loops_log_probabilities_are_the_scoring_passes(tokenizer, sample):
    model = captioner(tokenizer, "static")
    features = torch.randn(16, 32)
    decoder = model._static_decoder()
    torch.manual_seed(1)
    tokens, drawn = decoder.decode(model.condition(features), model.max_len, model.stop_ids, sample, log_probs=True)
    scored, _ = model.score(features, tokens)
    torch.testing.assert_close(drawn.sum(1), scored, rtol=0, atol=1e-5)


def test_the_fixed_shape_step_computes_the_sliced_steps_hidden_states(tokenizer):
    """The step attending over the whole cache under a mask (compiled, CUDA graphs) against the one attending
    over the filled positions only (``generate``'s rounding), on the same cache."""
    model = captioner(tokenizer, "static")
    decoder = model._static_decoder()
    gpt = model.model.gpt
    prefix = model.condition(torch.randn(8, 32)).detach()
    with torch.no_grad():
        cache = decoder._static_cache(gpt.transformer(inputs_embeds=prefix, use_cache=True).cache, prefix.shape[1] + 5)
        keys, values, filled = cache.keys, cache.values, cache.filled
        copies = [tensor.clone() for tensor in (*keys, *values)]
        token = torch.randint(0, len(tokenizer), (8,))
        where = cache.positions[prefix.shape[1] : prefix.shape[1] + 1]
        masked = decoder._token_step(token, where, filled, keys, values)
        sliced = decoder._token_step(token, where, filled, copies[: len(keys)], copies[len(keys) :],
                                     prefix.shape[1] + 1)  # fmt: skip
    torch.testing.assert_close(masked, sliced, rtol=0, atol=1e-5)
    assert torch.equal(keys[0], copies[0])  # both wrote the token's key at its position
    assert int(filled.sum()) == prefix.shape[1] + 1


def test_compiled_decoding_matches_generate_up_to_rounding(tokenizer):
    """torch.compile's kernels round differently, so tokens are compared where the eager loop's runner-up is
    not within rounding of the chosen token: greedy captions, and log-probabilities against the scoring pass."""
    generate, compiled = captioner(tokenizer, "generate"), captioner(tokenizer, "compiled")
    features = torch.randn(16, 32)
    greedy = compiled.rollout(features, greedy=True).message
    assert torch.equal(greedy, generate.rollout(features, greedy=True).message)
    decoder = compiled._static_decoder()
    assert decoder.compiled
    torch.manual_seed(2)
    tokens, drawn = decoder.decode(compiled.condition(features), compiled.max_len, compiled.stop_ids, True,
                                   log_probs=True)  # fmt: skip
    torch.testing.assert_close(drawn.sum(1), compiled.score(features, tokens)[0], rtol=0, atol=1e-4)


def test_a_model_the_loop_cannot_decode_falls_back_to_generate_saying_so_once(tokenizer, monkeypatch, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    crossing = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, add_cross_attention=True))
    assert "cross-attention" in unsupported(crossing)
    assert "not a GPT-2" in unsupported(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cross-attention"):
        StaticDecoder(crossing, crossing.lm_head, 0)

    monkeypatch.setattr(static_decoding, "_said", set())  # what earlier tests made the process say is forgotten
    model = captioner(tokenizer, "static")
    model._prefix_language_model = lambda: None  # as BLIP's and the generic captioner's: no prefix to continue
    features = torch.randn(4, 32)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.rollout(features)
        model.rollout(features)
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith("note: --decoder static:") and "decodes with generate" in said[0]
    assert not caught  # one line of the project's own, not a Python warning with its source line
    model.decoder = "auto"  # auto falls back without a word
    model.rollout(features)
    assert "--decoder" not in capsys.readouterr().err


def top_level_operators(function):
    with torch.profiler.profile() as profile:
        function()
    operators = ("aten::", "mkl::")  # MKL's packed products are operators of their own
    return sum(1 for event in profile.events() if event.cpu_parent is None and event.name.startswith(operators))


def test_the_loop_dispatches_a_fraction_of_generates_operators(tokenizer):
    """Top-level operators of a whole decoding (prefill included): the eager loop's per-token step is GPT-2's
    block in 2-D, the compiled one a single compiled region around its matrix products."""
    models = {decoding: captioner(tokenizer, decoding, any_period=False) for decoding in ("generate", "static",
                                                                                          "compiled")}  # fmt: skip
    for model in models.values():
        model.stop_ids = [len(tokenizer)]  # never sampled: every caption is max_len long
    condition = models["static"].condition(torch.randn(8, 32)).detach()
    counts = {}
    with torch.no_grad():
        for decoding, model in models.items():
            model._decode(condition, sample=True)  # warm-up (and the compilation)
            counts[decoding] = top_level_operators(functools.partial(model._decode, condition, sample=True))
    assert counts["static"] <= counts["generate"] / 1.5, counts
    assert counts["compiled"] <= counts["generate"] / 3, counts


def mkl_products(decoder, model, condition, packing_pays):
    """The decode's tokens and log-probabilities, and whether it multiplied with MKL-packed weights."""
    with torch.no_grad(), mock.patch.object(static_decoding, "packing_pays", return_value=packing_pays):
        with torch.profiler.profile() as profile:
            torch.manual_seed(0)
            decoded = decoder.decode(condition, model.max_len, model.stop_ids, sample=True, log_probs=True)
    return decoded, any(event.name == "mkl::_mkl_linear" for event in profile.events())


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="MKL's packed products")
def test_the_cpu_loop_multiplies_with_weights_packed_for_mkl_where_that_pays(tokenizer):
    """Where MKL's packed product is faster, the eager loop's products read weights packed by MKL, with the
    tokens and log-probabilities of the same loop over plain ``addmm`` (which the tests above check against
    ``generate``); elsewhere it packs nothing."""
    model = captioner(tokenizer, "static")
    condition = model.condition(torch.randn(16, 32)).detach()
    decoder = model._static_decoder()
    packed, mkl = mkl_products(decoder, model, condition, packing_pays=True)
    assert mkl
    plain, mkl = mkl_products(decoder, model, condition, packing_pays=False)
    assert not mkl
    assert torch.equal(packed[0], plain[0]) and torch.equal(packed[1], plain[1])


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="MKL's packed products")
@pytest.mark.parametrize("packed_share, pays", [(0.5, True), (0.95, False), (1.2, False)])
def test_packing_is_chosen_by_timing_both_products_once(packed_share, pays, monkeypatch):
    """The decision reads the best of several interleaved timings (here made up) and is measured once per
    process, batch size and weight shape."""
    timings, packed_products, product = [], [], static_decoding._packed_product
    monkeypatch.setattr(static_decoding, "_packed_product", lambda *args: packed_products.append(1) or product(*args))

    def seconds(function):
        before = len(packed_products)
        function()
        packed = len(packed_products) > before
        timings.append(packed)
        return packed_share if packed else 1.0

    monkeypatch.setattr(static_decoding, "_packing_pays", {})
    monkeypatch.setattr(static_decoding, "_seconds", seconds)
    weight = torch.randn(24, 8)
    assert static_decoding.packing_pays(weight, rows=5, repeats=3) is pays
    assert timings == [False, True] * 4  # interleaved, one warm-up each
    assert static_decoding.packing_pays(weight, rows=5) is pays and len(timings) == 8  # measured once
    static_decoding.packing_pays(weight, rows=6, repeats=3)
    assert len(timings) == 16  # another batch size is measured again
