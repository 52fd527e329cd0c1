"""Several retrievers reward the captioner (paper section 6): ``--clip_model A B --retriever_mix mean|alternate``."""

import json

import pytest
import torch

from egg.zoo.discriminative_captioner.archs import DiscriminativeGame, RetrieverReceiver
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..stubs import FixedCaptions
from ..tiny_models import save_openai_clip, tiny_clip


def two_retrievers():
    first = ClipRetriever(tiny_clip(seed=0), clip_transform(32))
    second = ClipRetriever(tiny_clip(seed=5, embed_dim=24), clip_transform(32))
    with torch.no_grad():
        second.model.logit_scale.fill_(3.0)  # another temperature than the first's 0.01
    second.temperature = float(1 / torch.tensor(3.0).exp())
    return first, second


def candidates(retrievers, n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    parts = [torch.nn.functional.normalize(torch.randn(n, r.encode_texts(["a"]).shape[1], generator=generator), dim=-1)
             for r in retrievers]  # fmt: skip
    return parts, torch.cat(parts, dim=1)  # each retriever's embeddings, and joined as the cache gives them


def by_hand(retriever, texts, images, labels):
    """The log-probability reward under one retriever, at its own temperature."""
    scores = retriever.encode_texts(texts) @ images.T / retriever.temperature
    return torch.log_softmax(scores, dim=1).gather(1, labels[:, None])[:, 0]


def test_the_mean_reward_is_the_mean_of_each_retrievers_own_reward():
    first, second = two_retrievers()
    parts, joined = candidates([first, second], 5)
    texts, labels = ["a red circle", "a dog", "digital art", "two squares", "the beach"], torch.arange(5)
    scores = RetrieverReceiver(first, [second])(texts, joined)
    assert scores.shape == (2, 5, 5)
    loss = DiscriminationLoss(temperature=first.temperature)
    cost, aux = loss(None, None, joined, scores, labels)
    expected = (by_hand(first, texts, parts[0], labels) + by_hand(second, texts, parts[1], labels)) / 2
    torch.testing.assert_close(-cost, expected)
    torch.testing.assert_close(aux["reward"], expected)
    with pytest.raises(ValueError, match="add up to"):
        RetrieverReceiver(first, [second])(texts, joined[:, :-1])


def FixedSender(texts):
    """Captions chosen in advance, one per image (the rollouts' log-probabilities are zero)."""
    return FixedCaptions(torch.zeros(len(texts)), texts=texts)


def test_alternate_rewards_one_retriever_per_training_batch_in_turn_and_the_turn_is_checkpointed():
    first, second = two_retrievers()
    parts, joined = candidates([first, second], 4)
    texts, labels = ["a red circle", "a dog", "digital art", "two squares"], torch.arange(4)
    game = DiscriminativeGame(FixedSender(texts), RetrieverReceiver(first, [second]),
                              DiscriminationLoss(temperature=first.temperature), retriever_mix="alternate")  # fmt: skip
    game.train()
    rewards = [game(torch.zeros(4, 1), labels, joined)[1].aux["reward"] for _ in range(3)]
    for turn, reward in enumerate(rewards):
        retriever, images = (first, parts[0]) if turn % 2 == 0 else (second, parts[1])
        torch.testing.assert_close(reward, by_hand(retriever, texts, images, labels))
    _, interaction = game(torch.zeros(4, 1), labels, joined)  # the fourth batch: the second retriever's turn
    hits = lambda r, images: (r.encode_texts(texts) @ images.T).argmax(1) == labels  # noqa: E731 (no ties here)
    assert torch.equal(interaction.aux["acc"].bool(), hits(first, parts[0]))  # P@1 is always the first's
    assert torch.equal(interaction.aux["acc_retriever2"].bool(), hits(second, parts[1]))
    state = game.state_dict()
    assert int(state["retriever_turn"]) == 4 and not any(key.startswith("receiver.") for key in state)
    loss = DiscriminationLoss(temperature=first.temperature)
    receiver = RetrieverReceiver(first, [second])
    resumed = DiscriminativeGame(FixedSender(texts), receiver, loss, retriever_mix="alternate")
    resumed.load_state_dict(state)
    resumed.train()
    torch.testing.assert_close(resumed(torch.zeros(4, 1), labels, joined)[1].aux["reward"], rewards[0])  # turn 4
    game.eval()  # evaluation: the mean of both, whoever's turn it is
    expected = (by_hand(first, texts, parts[0], labels) + by_hand(second, texts, parts[1], labels)) / 2
    torch.testing.assert_close(game(torch.zeros(4, 1), labels, joined)[1].aux["reward"], expected)


def test_the_options_split_into_the_runs_retriever_and_the_others(tmp_path):
    opts = get_opts(["--clip_model", "a.pt", "b.pt", "c.pt", "--retriever_mix", "alternate"])
    assert (opts.clip_model, opts.extra_clip_models, opts.retriever_mix) == ("a.pt", ("b.pt", "c.pt"), "alternate")
    assert get_opts(["--clip_model", "a.pt"]).extra_clip_models == ()
    with pytest.raises(UsageError, match="one per model"):
        get_opts(["--clip_backend", "open_clip", "--clip_model", "A", "B", "C", "--clip_pretrained", "x", "y"])
    with pytest.raises(UsageError, match="--hard_distractors"):
        get_opts(["--clip_model", "a.pt", "b.pt", "--hard_distractors", "3"])
    game = tmp_path / "two.json"
    game.write_text(json.dumps({"clip_model": ["a.pt", "b.pt"]}))  # a game file gives them as a list
    assert get_opts(["--game", str(game)]).extra_clip_models == ("b.pt",)


def test_a_run_with_two_retrievers_trains_and_logs_each_ones_p_at_1(tiny_run_args, world_cache, tmp_path, capsys):
    from egg.zoo.discriminative_captioner import train
    from egg.zoo.discriminative_captioner.synthetic import load_world

    world = load_world(world_cache, "tiny", progress=False)
    other = str(tmp_path / "other_clip.pt")
    save_openai_clip(other, seed=7)
    missing = str(tmp_path / "absent.pt")
    with pytest.raises(UsageError, match="absent.pt"):  # checked before any cache is built
        train.main(tiny_run_args + ["--clip_model", f"{world.directory}/retriever.pt", missing])
    capsys.readouterr()
    results = train.main(tiny_run_args + ["--clip_model", f"{world.directory}/retriever.pt", other,
                                          "--retriever_mix", "alternate", "--feature_cache_dir", str(tmp_path / "f")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert all("acc_retriever2" in line for line in lines)
    assert 0 <= results["acc_retriever2"] <= 1
    retriever_caches = {path.name for path in (tmp_path / "f").rglob("retriever*") if path.is_dir()}
    assert len(retriever_caches) == 2  # each retriever's embeddings are cached on their own


def test_each_clip_model_may_name_its_own_backend():
    opts = get_opts(["--clip_model", "transformers:DIR", "b.pt", "open_clip:ViT-B-32:tag"])
    assert (opts.clip_backend, opts.clip_model) == ("transformers", "DIR")
    assert opts.extra_clip_models == ("openai:b.pt", "open_clip:ViT-B-32:tag")  # plain names keep --clip_backend's
    opts = get_opts(["--clip_model", "a.pt", "transformers:DIR"])
    assert (opts.clip_backend, opts.clip_model, opts.extra_clip_models) == ("openai", "a.pt", ("transformers:DIR",))
    opts = get_opts(["--clip_model", "open_clip:ViT-B-32:laion2b_s34b_b79k"])
    assert (opts.clip_backend, opts.clip_model, opts.clip_pretrained) == ("open_clip", "ViT-B-32", "laion2b_s34b_b79k")
    from egg.zoo.discriminative_captioner.experiment import extra_retriever_options

    others = extra_retriever_options(get_opts(["--clip_model", "a.pt", "open_clip:ViT-B-32:tag", "transformers:D"]))
    assert [(o.clip_backend, o.clip_model, o.clip_pretrained) for o in others] == [
        ("open_clip", "ViT-B-32", "tag"), ("transformers", "D", None)]  # fmt: skip
    for args, message in (
        (["--clip_model", "open_clip:ViT-B-32:tag", "--clip_pretrained", "x"], "names its weights: drop"),
        (["--clip_backend", "transformers", "--clip_model", "openai:a.pt"], "drop --clip_backend"),
        (["--clip_model", "a.pt", "open_clip:ViT-B-32"], "open_clip needs its weights"),
        (["--clip_model", "a.pt", "transformers:b:c"], "takes no PRETRAINED"),
    ):  # fmt: skip
        with pytest.raises(UsageError, match=message) as error:
            get_opts(args)
        assert "--clip_model" in str(error.value) and "\n" not in str(error.value)


def test_a_run_mixes_backends_each_retriever_with_its_own_cache(tiny_run_args, world_cache, tmp_path, capsys):
    from egg.zoo.discriminative_captioner import train
    from egg.zoo.discriminative_captioner.synthetic import load_world

    world = load_world(world_cache, "tiny", progress=False)
    folder = f"{world.directory}/retriever_transformers"
    with pytest.raises(UsageError, match=f"given as transformers:{folder}"):  # a folder under the openai backend
        train.main(tiny_run_args + ["--clip_model", f"{world.directory}/retriever.pt", folder])
    capsys.readouterr()
    results = train.main(tiny_run_args + ["--clip_model", f"{world.directory}/retriever.pt", f"transformers:{folder}",
                                          "--feature_cache_dir", str(tmp_path / "f")])  # fmt: skip
    # the same CLIP in two backends: the same embeddings, so the same P@1 (up to float rounding at ties)
    assert results["acc_retriever2"] == pytest.approx(results["acc"], abs=0.05)
    assert len({path.name for path in (tmp_path / "f").rglob("retriever*") if path.is_dir()}) == 2
