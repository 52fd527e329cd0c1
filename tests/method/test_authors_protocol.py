"""The authors' protocol beside this project's choices: per-target hard distractors, length-normalised
log-probabilities, stopping at any token containing '.', beam rollouts with a greedy baseline, and the exact KL
against a plain language model.  Each option's default keeps this project's behaviour; the paper's game files
select the authors'."""


import pytest
import torch
from torch import nn
from transformers import BlipForConditionalGeneration, BlipProcessor

from egg.zoo.discriminative_captioner.archs import (
    CaptionerSender,
    DiscriminativeGame,
    FrozenReference,
    GreedyBaseline,
    LanguageModelReference,
    RetrieverReceiver,
)
from egg.zoo.discriminative_captioner.captioners import fused
from egg.zoo.discriminative_captioner.captioners.base import caption_mask
from egg.zoo.discriminative_captioner.captioners.blip import BlipCaptioner
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel
from egg.zoo.discriminative_captioner.core import NoBaseline
from egg.zoo.discriminative_captioner.data import EncodedSplit, ImageSplit
from egg.zoo.discriminative_captioner.data.hard_distractors import hard_distractor_loader
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..stubs import FixedCaptions
from ..tiny_models import gpt2_tokenizer, tiny_gpt2
from .test_game import SCORES, StubReceiver

PAPER_GAMES = ("conceptual", "coco", "flickr")  # the ClipCap experiments; blip_coco is the BLIP one


def images_and_features(size=4, seed=0):
    torch.manual_seed(seed)
    return torch.randn(size, 32), torch.arange(size), nn.functional.normalize(torch.randn(size, 32), dim=-1)


# --- 1. per-target hard distractors ----------------------------------------------------------------------------


def clustered_split(n_clusters=30, size=10, dim=16, seed=0):
    """An ``EncodedSplit`` of clustered unit embeddings (each image's neighbours are its cluster's)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=generator).repeat_interleave(size, dim=0)
    embeddings = nn.functional.normalize(centres + 0.3 * torch.randn(len(centres), dim, generator=generator), dim=-1)
    n = len(embeddings)
    split = ImageSplit("train", images=[None] * n, references=[["a caption"]] * n)
    return EncodedSplit(split, torch.randn(n, 8, generator=generator), embeddings)


def brute_force_neighbours(embeddings, k):
    cosine = embeddings @ embeddings.T
    cosine.fill_diagonal_(float("-inf"))
    return cosine.topk(k, dim=1).indices  # [N, k]


def test_every_image_is_the_target_once_per_epoch_with_its_brute_force_neighbours():
    dataset, k, batch_size = clustered_split(), 4, 20
    true = brute_force_neighbours(dataset.receiver_inputs, k)
    loader = hard_distractor_loader(dataset, k, batch_size, seed=3)
    for epoch in (1, 2):
        loader.batch_sampler.set_epoch(epoch)
        targets = []
        for _, labels, receiver_input, aux_input in loader:
            index, neighbours = aux_input["image_index"], aux_input["neighbour_index"]  # [B], [B, k]
            assert torch.equal(labels, torch.arange(batch_size))
            assert torch.equal(receiver_input, dataset.receiver_inputs[index])
            assert all(set(row.tolist()) == set(true[i].tolist()) for i, row in zip(index.tolist(), neighbours))
            assert torch.equal(aux_input["neighbour_images"], dataset.receiver_inputs[neighbours])  # [B, k, D]
            targets += index.tolist()
        assert sorted(targets) == list(range(len(dataset)))  # each image the target exactly once
    with pytest.raises(UsageError, match="--hard_distractors 20 must be between 1 and --batch_size - 1"):
        hard_distractor_loader(dataset, batch_size, batch_size, seed=3)


class FixedTexts:
    """A retriever stand-in whose caption embeddings are given."""

    def __init__(self, texts):
        self.texts = texts

    def encode_texts(self, message):
        return self.texts


def test_each_caption_is_scored_against_its_own_target_neighbours_and_random_batch_images():
    dataset, k, batch_size, temperature = clustered_split(), 4, 20, 0.05
    embeddings = dataset.receiver_inputs
    true = brute_force_neighbours(embeddings, k)
    loader = hard_distractor_loader(dataset, k, batch_size, seed=5)
    loader.batch_sampler.set_epoch(1)
    loss, neighbours_in_batch = DiscriminationLoss("logprob", temperature), 0
    for _, labels, receiver_input, aux_input in loader:
        texts = nn.functional.normalize(embeddings[aux_input["image_index"]] + torch.randn(batch_size, 16), dim=-1)
        scores = RetrieverReceiver(FixedTexts(texts))(None, receiver_input, aux_input)  # [B, B + k]
        assert scores.shape == (batch_size, batch_size + k)
        _, aux = loss(None, None, receiver_input, scores, labels)
        batch = aux_input["image_index"].tolist()
        for row, target in enumerate(batch):
            kept = [batch[c] for c in range(batch_size) if scores[row, c] > float("-inf")]
            neighbours = aux_input["neighbour_index"][row].tolist()
            neighbours_in_batch += len(set(neighbours) & set(batch))
            candidates = kept + neighbours
            assert len(candidates) == len(set(candidates)) == batch_size  # the target and B - 1 distractors
            assert target in kept and set(true[target].tolist()) <= set(candidates)
            # Against an independent reference: the softmax over this target's own candidates, built by hand.
            match = texts[row] @ embeddings[candidates].T / temperature  # [B]
            expected = torch.log_softmax(match, dim=0)[kept.index(target)]
            assert aux["reward"][row].item() == pytest.approx(expected.item(), abs=1e-5)
            hit = match[kept.index(target)] > torch.cat([match[: kept.index(target)], match[kept.index(target) + 1 :]])
            assert aux["acc"][row].item() == float(hit.all())
    assert neighbours_in_batch > 0  # the batch's copies of a target's neighbours were met (and left out)


# --- 3. log-probability normalisation ------------------------------------------------------------------------


def LengthStubSender(lengths):
    """Fixed captions of the given lengths whose summed log-probabilities are parameters."""
    return FixedCaptions([-3.0, -8.0], lengths=lengths, width=4)


def costs():
    return -torch.log_softmax(SCORES, dim=1).diagonal()


@pytest.mark.parametrize("normalization", ["sum", "mean"])
def test_mean_normalisation_divides_each_captions_log_prob_by_its_length_and_the_gradient_with_it(normalization):
    sender = LengthStubSender([2, 4])
    game = DiscriminativeGame(sender, StubReceiver(SCORES), DiscriminationLoss(temperature=1.0),
                              baseline_type=NoBaseline, log_prob_normalization=normalization)  # fmt: skip
    game.train()
    loss, _ = game(None, torch.arange(2))
    loss.backward()
    per_caption = sender.log_prob.detach() / sender.lengths if normalization == "mean" else sender.log_prob.detach()
    assert loss.item() == pytest.approx((costs() * per_caption).mean().item() + costs().mean().item(), rel=1e-6)
    # d/d(summed log p): cost / B for the sum (paper Eq. 1), cost / (B * length) for the mean (the authors' code)
    scale = sender.lengths if normalization == "mean" else torch.ones(2)
    torch.testing.assert_close(sender.log_prob.grad, costs() / 2 / scale)


def test_the_paper_game_files_normalise_by_length_and_the_built_in_world_sums():
    for game in PAPER_GAMES + ("blip_coco",):
        assert get_opts(["--game", game]).log_prob_normalization == "mean", game
    assert get_opts([]).log_prob_normalization == "sum"
    with pytest.raises(SystemExit):
        get_opts(["--log_prob_normalization", "max"])


# --- 8. stopping at any token containing '.' ------------------------------------------------------------------

EXTRA_PERIODS = ["...", "end."]  # tokens with a '.' that are not the '.' token, as GPT-2's "Ġ." and ".\""


def period_clipcap(stop_at_any_period, favoured=None, max_len=6):
    """A tiny ClipCap whose vocabulary has '.', '...' and 'end.'; ``favoured``: a token its head always picks."""
    tokenizer = gpt2_tokenizer()
    tokenizer.add_tokens(EXTRA_PERIODS)
    model = ClipCapModel(ClipCapConfig(prefix_length=2, prefix_size=32), tiny_gpt2(len(tokenizer)))
    if favoured is not None:  # an untied head with a bias that makes ``favoured`` all but certain
        embedding = model.gpt.lm_head.weight.shape[1]
        head = nn.Linear(embedding, len(tokenizer), bias=True)
        with torch.no_grad():
            head.weight.copy_(model.gpt.lm_head.weight)
            head.bias.zero_()
            head.bias[tokenizer.convert_tokens_to_ids(favoured)] = 60.0
        model.gpt.lm_head = head
    captioner = ClipCapCaptioner(model, tokenizer, image_encoder=None, max_len=max_len,
                                 stop_at_any_period=stop_at_any_period)  # fmt: skip
    return captioner.train(), tokenizer


def test_the_stop_set_is_every_token_containing_a_period_read_from_the_vocabulary():
    on, tokenizer = period_clipcap(True)
    off, _ = period_clipcap(False)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in [".", *EXTRA_PERIODS]}
    assert sorted(off.stop_ids) == sorted([tokenizer.eos_token_id, ids["."]])  # ClipCap's own rule
    expected = {tokenizer.eos_token_id, *ids.values()}
    assert set(on.stop_ids) == expected
    assert expected >= {i for token, i in tokenizer.get_vocab().items() if "." in token}


@pytest.mark.parametrize("decoding", ["sample", "greedy", "beam"])
def test_with_stop_at_any_period_a_caption_ends_at_a_token_containing_a_period(decoding):
    features = torch.randn(3, 32)
    for stop_at_any_period in (True, False):
        captioner, tokenizer = period_clipcap(stop_at_any_period, favoured="...")
        sender = CaptionerSender(captioner, rollouts=decoding, num_beams=2).train()
        rollout = sender(features)
        ellipsis = tokenizer.convert_tokens_to_ids("...")
        assert (rollout.message[:, 0] == ellipsis).all()
        if stop_at_any_period:
            assert rollout.length.tolist() == [1.0] * 3 and rollout.text == ["..."] * 3
        else:  # ClipCap's rule: '...' is not '.', the caption runs on to max_len
            assert rollout.length.tolist() == [float(captioner.max_len)] * 3
        # the sampler and the scoring pass agree on where the caption ends
        torch.testing.assert_close(rollout.log_prob, captioner.score(features, rollout.message)[0])


def test_with_stop_at_any_period_the_log_prob_mask_stops_at_the_first_token_containing_a_period():
    captioner, tokenizer = period_clipcap(True)
    features = torch.randn(2, 32)
    words = tokenizer.convert_tokens_to_ids(["a", "end.", "a", "a"])
    tokens = torch.tensor([words, words])  # [B, T]: 'end.' at position 1, words after it
    mask = caption_mask(tokens, captioner.stop_ids)
    assert mask.tolist() == [[True, True, False, False]] * 2
    log_probs = torch.log_softmax(captioner._logits(captioner.condition(features), tokens).float(), dim=-1)
    expected = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)[:, :2].sum(1)
    torch.testing.assert_close(captioner.score(features, tokens)[0], expected)
    off, _ = period_clipcap(False)
    assert caption_mask(tokens, off.stop_ids).all()  # without it, 'end.' does not end a caption


def test_blip_stops_at_any_period_through_the_same_code(tiny_files):
    model = BlipForConditionalGeneration.from_pretrained(tiny_files["blip"]).eval()
    processor = BlipProcessor.from_pretrained(tiny_files["blip"])
    period = processor.tokenizer.convert_tokens_to_ids(".")
    with torch.no_grad():
        model.text_decoder.cls.predictions.decoder.bias[period] = 60.0
    size = model.config.vision_config.image_size
    pixels = torch.randn(2, 3, size, size)
    for stop_at_any_period, length in ((True, 1.0), (False, 6.0)):
        captioner = BlipCaptioner(model, processor, max_len=6, stop_at_any_period=stop_at_any_period)
        assert (period in captioner.stop_ids) == stop_at_any_period
        rollout = captioner.rollout(pixels)
        assert rollout.length.tolist() == [length, length]
        torch.testing.assert_close(rollout.log_prob, captioner.score(pixels, rollout.message)[0])


def test_the_paper_clipcap_game_files_stop_at_any_period_and_the_option_reaches_the_captioner(tiny_files):
    from egg.zoo.discriminative_captioner.captioners import build_captioner

    from ..tiny_models import clipcap_opts

    for game in PAPER_GAMES:
        assert get_opts(["--game", game]).stop_at_any_period, game
    assert not get_opts([]).stop_at_any_period and not get_opts(["--game", "blip_coco"]).stop_at_any_period
    period = build_captioner(clipcap_opts(tiny_files, "mlp", "--stop_at_any_period"))
    plain = build_captioner(clipcap_opts(tiny_files, "mlp"))
    assert len(plain.stop_ids) == 2 and set(period.stop_ids) >= set(plain.stop_ids)


# --- 10. beam rollouts and the greedy baseline ----------------------------------------------------------------


def real_game(captioner, retriever, **kwargs):
    sender = CaptionerSender(captioner, num_beams=3, rollouts=kwargs.pop("rollouts", "sample"))
    return DiscriminativeGame(sender, RetrieverReceiver(retriever), DiscriminationLoss(temperature=0.05), **kwargs)


def test_beam_rollouts_are_the_top_beam_caption_scored_with_gradients(clipcap):
    features = torch.randn(4, 32)
    sender = CaptionerSender(clipcap, rollouts="beam", num_beams=3).train()
    rollout = sender(features)
    beam = clipcap.generate(features, num_beams=3)
    assert torch.equal(rollout.message, beam.message) and rollout.text == beam.text
    assert rollout.log_prob.requires_grad
    torch.testing.assert_close(rollout.log_prob, clipcap.score(features, rollout.message)[0])
    sender.eval()
    assert (sender(features).log_prob == 0).all()  # evaluation decodes the same beams, unscored


def test_beam_rollouts_with_a_greedy_baseline_are_the_papers_table_8_row(clipcap, retriever):
    game = real_game(clipcap, retriever, rollouts="beam", baseline_type=GreedyBaseline)
    game.train()
    sampled, decoded, sample = [], [], game.sender.sample
    game.sender.sample = lambda *args, **kwargs: sampled.append(sample(*args, **kwargs)) or sampled[-1]
    game.sender.register_forward_hook(lambda module, args, output: decoded.append(output))
    features, labels, images = images_and_features()
    loss, interaction = game(features, labels, images)
    greedy = clipcap.generate(features, num_beams=1)
    expected = -DiscriminationLoss(temperature=0.05)(None, None, None, retriever.encode_texts(greedy.text) @ images.T,
                                                     labels)[1]["reward"]  # fmt: skip
    torch.testing.assert_close(interaction.aux["baseline"], expected, atol=1e-5, rtol=1e-5)
    (rollout,), (greedy_decoded,) = sampled, decoded  # the rollout (beam), the baseline's greedy caption
    assert torch.equal(rollout.message, clipcap.generate(features, num_beams=3).message)
    assert loss.requires_grad and torch.equal(greedy_decoded.message, greedy.message)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in clipcap.trainable_parameters())


def test_rollouts_options_and_the_greedy_rollouts_alias():
    assert get_opts([]).rollouts == "sample"
    assert get_opts(["--greedy_rollouts", "--kl_coeff", "0"]).rollouts == "greedy"
    for game in PAPER_GAMES + ("blip_coco",):  # they set greedy_rollouts, the paper's stated setting
        opts = get_opts(["--game", game])
        assert opts.rollouts == "greedy" and opts.greedy_rollouts, game
    opts = get_opts(["--game", "coco", "--rollouts", "beam", "--baseline", "greedy"])  # --rollouts wins
    assert opts.rollouts == "beam" and not opts.greedy_rollouts
    assert get_opts(["--game", "coco", "--no-greedy_rollouts"]).rollouts == "sample"
    with pytest.raises(UsageError, match="advantage of exactly zero"):
        get_opts(["--rollouts", "greedy", "--baseline", "greedy"])
    with pytest.raises(UsageError, match="advantage of exactly zero"):
        get_opts(["--game", "coco", "--baseline", "greedy"])


def test_build_game_reads_rollouts_and_the_old_greedy_rollouts_option(clipcap, retriever):
    from egg.zoo.discriminative_captioner.games import build_game

    old = get_opts(["--greedy_rollouts", "--num_beams", "2", "--kl_coeff", "0"])  # as older game files say it
    game = build_game(old, clipcap, retriever)
    assert game.sender.rollouts == "greedy" and game.log_prob_normalization == "sum"
    new = get_opts(["--rollouts", "beam", "--num_beams", "2", "--log_prob_normalization", "mean", "--kl_coeff", "0"])
    game = build_game(new, clipcap, retriever)
    assert game.sender.rollouts == "beam" and game.log_prob_normalization == "mean"


# --- 2. the KL regulariser -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_exact_kl_in_vocabulary_slices_matches_torchs_kl_div(monkeypatch, bias):
    monkeypatch.setitem(fused.VOCAB_SLICE, "cpu", 4)  # slices of 4, 4, 4 and 1 columns
    torch.manual_seed(0)
    hidden, reference_hidden = torch.randn(3, 5, 8) * 3, torch.randn(3, 5, 6) * 3
    head, reference_head = nn.Linear(8, 13, bias=bias), nn.Linear(6, 13, bias=bias)
    kl = fused.head_kl(hidden, head, reference_hidden, reference_head)
    policy = torch.log_softmax(head(hidden).double(), dim=-1)  # [B, T, V]
    reference = torch.log_softmax(reference_head(reference_hidden).double(), dim=-1)
    # the authors' KLRegularizer: kl_div(policy log-probs, reference log-probs, log_target=True), summed over V
    expected = nn.functional.kl_div(policy, reference, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl.double(), expected, atol=1e-5, rtol=1e-4)
    assert not kl.requires_grad
    assert torch.allclose(fused.head_kl(hidden, head, hidden, head), torch.zeros(3, 5), atol=1e-5)
    with pytest.raises(ValueError, match="vocabulary"):
        fused.head_kl(hidden, head, reference_hidden, nn.Linear(6, 12))


def language_model_reference(clipcap, tokenizer, seed=5):
    return LanguageModelReference(tiny_gpt2(len(tokenizer), seed=seed), tokenizer.eos_token_id, clipcap.stop_ids)


def test_exact_kl_to_a_plain_language_model_is_the_plain_torch_computation(clipcap, tokenizer):
    features = torch.randn(4, 32)
    reference = language_model_reference(clipcap, tokenizer)
    rollout = clipcap.rollout(features, kl_reference=reference)
    width = int(rollout.length.max())
    tokens = rollout.message[:, :width]  # [B, width]
    policy = torch.log_softmax(clipcap._logits(clipcap.condition(features), tokens).double(), dim=-1)
    context = torch.cat([torch.full((4, 1), tokenizer.eos_token_id), tokens[:, :-1]], dim=1)  # BOS, then the caption
    lm = torch.log_softmax(reference.language_model(input_ids=context).logits.double(), dim=-1)  # no image
    per_token = nn.functional.kl_div(policy, lm, log_target=True, reduction="none").sum(-1)  # [B, width]
    mask = caption_mask(tokens, clipcap.stop_ids).double()
    torch.testing.assert_close(rollout.kl.double(), (per_token * mask).sum(1), atol=1e-4, rtol=1e-4)
    assert not rollout.kl.requires_grad and (rollout.kl > 0).all()
    # its sampled counterpart scores the same caption under the language model
    lm_log_prob = (lm.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * mask).sum(1)
    torch.testing.assert_close(reference(features, rollout.message).double(), lm_log_prob, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("normalization", ["sum", "mean"])
def test_the_game_adds_the_exact_kl_normalised_like_the_log_prob_to_the_cost(clipcap, tokenizer, retriever,
                                                                             normalization):  # fmt: skip
    reference = language_model_reference(clipcap, tokenizer)
    game = real_game(clipcap, retriever, rollouts="greedy", baseline_type=NoBaseline, kl_reference=reference,
                     kl_coeff=0.5, kl_estimator="exact", log_prob_normalization=normalization)  # fmt: skip
    game.train()
    features, labels, images = images_and_features()
    loss, interaction = game(features, labels, images)
    greedy = clipcap.rollout(features, greedy=True, kl_reference=reference)
    length = greedy.length if normalization == "mean" else torch.ones(4)
    torch.testing.assert_close(interaction.aux["kl"], greedy.kl / length)
    cost = -interaction.aux["reward"]
    expected = ((cost + 0.5 * greedy.kl / length) * greedy.log_prob.detach() / length).mean() + cost.mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    loss.backward()
    # the reference is frozen, never trained, and left out of checkpoints
    assert all(p.grad is None and not p.requires_grad for p in reference.parameters())
    assert not any(key.startswith("reference.") for key in game.state_dict())
    assert not {id(p) for p in reference.parameters()} & {id(p) for p in clipcap.trainable_parameters()}
    game.eval()
    with torch.no_grad():
        assert "kl" not in game(features, labels, images)[1].aux


def test_the_exact_kl_to_the_pretrained_captioner_is_zero_before_any_update(clipcap, retriever):
    game = real_game(clipcap, retriever, rollouts="beam", kl_reference=FrozenReference(clipcap), kl_coeff=0.1,
                     kl_estimator="exact")  # fmt: skip
    game.train()
    _, interaction = game(*images_and_features())
    torch.testing.assert_close(interaction.aux["kl"], torch.zeros(4), atol=1e-4, rtol=0)


def test_the_sampled_kl_estimate_is_refused_on_greedy_and_beam_rollouts():
    for rollouts in ("greedy", "beam"):
        with pytest.raises(UsageError, match="needs --kl_estimator exact"):
            get_opts(["--kl_coeff", "0.1", "--rollouts", rollouts])
        opts = get_opts(["--kl_coeff", "0.1", "--rollouts", rollouts, "--kl_estimator", "exact"])
        assert opts.kl_estimator == "exact"
    with pytest.raises(UsageError, match="needs --kl_estimator exact"):
        get_opts(["--game", "coco", "--kl_coeff", "0.1", "--kl_estimator", "sampled"])
    assert get_opts(["--game", "coco", "--kl_coeff", "0.1"]).kl_estimator == "exact"


def test_kl_options_the_paper_files_and_blip(capsys):
    for game in PAPER_GAMES:
        opts = get_opts(["--game", game])
        assert (opts.kl_reference, opts.kl_estimator) == ("language_model", "exact"), game
    opts = get_opts([])
    assert (opts.kl_reference, opts.kl_estimator) == ("captioner", "sampled")  # this project's, as before
    with pytest.raises(UsageError, match="no meaning for BLIP"):
        get_opts(["--captioner", "blip", "--kl_reference", "language_model"])
    # a game file's KL reference matters only with a KL penalty: flickr's (kl_coeff 0) does not stop BLIP
    assert get_opts(["--game", "flickr", "--captioner", "blip"]).captioner == "blip"
    with pytest.raises(SystemExit):
        get_opts(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(the authors' KLRegularizer; ClipCap only)" in text and "(this project's choice)" in text


def test_build_game_loads_the_language_model_reference_frozen_from_language_model(tiny_files, retriever):
    from egg.zoo.discriminative_captioner.captioners import build_captioner
    from egg.zoo.discriminative_captioner.games import build_game

    from ..tiny_models import clipcap_opts

    opts = clipcap_opts(tiny_files, "mlp", "--kl_coeff", "0.1", "--kl_reference", "language_model",
                        "--kl_estimator", "exact", "--rollouts", "greedy")  # fmt: skip
    captioner = build_captioner(opts)
    game = build_game(opts, captioner, retriever)
    assert isinstance(game.kl_reference, LanguageModelReference) and not game.kl_reference.training
    assert all(not p.requires_grad for p in game.kl_reference.parameters())
    game.train()
    _, interaction = game(*images_and_features())
    assert (interaction.aux["kl"] >= 0).all()
    assert not any(key.startswith("reference.") for key in game.state_dict())
