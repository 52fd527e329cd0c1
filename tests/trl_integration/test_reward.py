"""The reward function for TRL (and verl): the game's rewards on the same captions, images and retriever options;
an image's completions share one target; a call with one image is one clear error; no TRL needed to use it."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from egg.zoo.discriminative_captioner.experiment import extra_retriever_options
from egg.zoo.discriminative_captioner.games import build_game
from egg.zoo.discriminative_captioner.options.parse import config_of
from egg.zoo.discriminative_captioner.retrievers import build_retriever
from egg.zoo.discriminative_captioner.rewards import DiscriminativeReward, verl_reward
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..paths import ROOT
from ..stubs import FixedCaptions
from ..tiny_cache import build as build_tiny_cache
from ..tiny_models import save_openai_clip

WORDS = "a red green blue circle square small large dark light background cross diamond".split()


def pictures(n, seed=0):
    """``n`` different 32 x 32 images."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def copies(images, k):
    """Each image ``k`` times in a row, each a separate decoding (as a trainer hands them to a reward)."""
    return [Image.open(io.BytesIO(png(image))) for image in images for _ in range(k)]


def png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def captions(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=4)) for _ in range(n)]


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """Two tiny OpenAI-CLIP files with different weights and temperatures (100 and 50)."""
    root = tmp_path_factory.mktemp("retrievers")
    first, second = str(root / "first.pt"), str(root / "second.pt")
    save_openai_clip(first, seed=0)
    model = save_openai_clip(second, seed=1)
    with torch.no_grad():
        model.logit_scale.fill_(float(np.log(50.0)))
    torch.save(model.state_dict(), second)
    return first, second


def game_rewards(flags, clipcap, images, texts, k):
    """The rewards the game logs for ``texts`` (K per image, in order) over the batch ``images``: the game as
    ``train`` builds it from ``flags``, with a Sender that emits these captions."""
    config = config_of(flags + ["--rollouts_per_image", str(k)])
    retriever = build_retriever(config)
    extras = [build_retriever(options) for options in extra_retriever_options(config)]
    game = build_game(config, clipcap, retriever, extras)
    game.sender = FixedCaptions(torch.zeros(len(texts)), texts=texts)
    game.train()
    retrievers = [retriever, *extras]
    embeddings = torch.cat([r.encode_images(torch.stack([r.image_transform(i) for i in images])) for r in retrievers],
                           dim=1)  # [B, D1 + D2 + ...], as the feature caches hold them  # fmt: skip
    _, interaction = game(torch.zeros(len(images), 1), torch.arange(len(images)), embeddings)
    return interaction.aux["reward"], interaction.aux["acc"]


@pytest.mark.parametrize("reward", ["logprob", "accuracy", "cosine"])
@pytest.mark.parametrize("k", [1, 3])
def test_rewards_are_the_games_on_the_same_captions_images_and_options(clip_files, clipcap, reward, k):
    images, texts = pictures(5), captions(5 * k)
    flags = ["--clip_model", clip_files[0], "--reward", reward, "--reward_temperature", "0.07"]
    expected, acc = game_rewards(flags, clipcap, images, texts, k)
    scorer = DiscriminativeReward(clip_files[0], reward=reward, temperature=0.07)
    logged = {}
    rewards = scorer(prompts=None, completions=texts, image=copies(images, k),
                     log_metric=lambda name, value: logged.update({name: value}))  # fmt: skip
    assert torch.equal(torch.tensor(rewards), expected.float())
    assert logged == {f"discriminative_{reward}/p_at_1": pytest.approx(acc.mean().item())}


def test_several_retrievers_reward_as_the_games_mean(clip_files, clipcap):
    images, texts = pictures(4), captions(8)
    expected, _ = game_rewards(["--clip_model", *clip_files], clipcap, images, texts, 2)
    scorer = DiscriminativeReward(list(clip_files))
    assert scorer.temperature == pytest.approx(0.01, rel=1e-4)  # the first retriever's own (logit_scale 4.6052)
    assert torch.equal(torch.tensor(scorer(completions=texts, image=copies(images, 2))), expected.float())


def test_rewards_against_a_float64_computation(clip_files):
    """Independent of the game's code: cosine of normalised embeddings, log-softmax over the distinct images."""
    scorer = DiscriminativeReward(clip_files[0], temperature=0.05)
    retriever = scorer.retrievers[0]
    images, texts = pictures(3), captions(6)
    rewards = scorer(completions=[[{"role": "assistant", "content": t}] for t in texts], image=copies(images, 2))
    pixels = torch.stack([retriever.image_transform(i) for i in images])
    image_embeddings = retriever.model.encode_image(pixels).double()
    import clip

    text_embeddings = retriever.model.encode_text(clip.tokenize(texts, context_length=16, truncate=True)).double()
    cosine = torch.nn.functional.normalize(text_embeddings, dim=-1) @ torch.nn.functional.normalize(
        image_embeddings, dim=-1).T  # [6, 3]  # fmt: skip
    expected = torch.log_softmax(cosine / 0.05, dim=1)[torch.arange(6), torch.arange(3).repeat_interleave(2)]
    assert torch.allclose(torch.tensor(rewards, dtype=torch.float64), expected, atol=1e-4)


def test_an_images_completions_share_one_target_never_each_others_distractor(clip_files):
    scorer = DiscriminativeReward(clip_files[0])
    images, texts = pictures(4), captions(12)
    grouped = scorer(completions=texts, image=copies(images, 3))
    assert scorer.last["candidates"] == 4
    # each caption alone with the same four images: its reward does not depend on its image's other captions
    for i in range(3):
        alone = scorer(completions=texts[i::3], image=copies(images, 1))
        assert alone == pytest.approx(grouped[i::3], abs=1e-6)


def test_the_images_column_and_conversational_completions(clip_files):
    scorer = DiscriminativeReward(clip_files[0])
    images, texts = pictures(3), captions(3)
    chat = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in texts]
    assert scorer(completions=chat, images=[[i] for i in images]) == scorer(completions=texts, image=images)


def test_fewer_than_two_distinct_images_is_one_clear_error(clip_files):
    scorer = DiscriminativeReward(clip_files[0])
    with pytest.raises(UsageError) as error:
        scorer(completions=captions(4), image=copies(pictures(1), 4))
    message = str(error.value)
    assert "\n" not in message and "1 distinct image" in message
    for option in ("per_device_train_batch_size", "steps_per_generation", "generation_batch_size", "num_generations"):
        assert option in message
    with pytest.raises(UsageError, match="'image' column"):
        scorer(completions=captions(2), prompt_id=[0, 1])


def test_retriever_options_are_the_games(clip_files, tmp_path):
    with pytest.raises(UsageError, match="--clip_model"):  # the game's own message for a missing file
        DiscriminativeReward(str(tmp_path / "absent.pt"))
    with pytest.raises(UsageError, match="open_clip"):  # open_clip needs its weights, as in the game
        DiscriminativeReward("open_clip:ViT-B-32")
    scorer = DiscriminativeReward(f"openai:{clip_files[0]}", retriever_precision="bf16")
    assert next(scorer.retrievers[0].parameters()).dtype == torch.bfloat16


def neighbours_by_hand(call, pool, k, duplicate):
    """Each call image's k nearest pool rows by cosine, copies (cosine >= duplicate) left out; numpy, float64."""
    cosine = call.double().numpy() @ pool.double().numpy().T
    cosine[cosine >= duplicate] = -np.inf
    return torch.from_numpy(np.argsort(-cosine, axis=1, kind="stable")[:, :k].copy())


def test_hard_distractors_are_the_games(clip_files, clipcap):
    scorer = DiscriminativeReward(clip_files[0])
    retriever = scorer.retrievers[0]
    images, others, k, per_image = pictures(5), pictures(12, seed=1), 2, 2
    encode = lambda batch: retriever.encode_images(torch.stack([retriever.image_transform(i) for i in batch]))  # noqa: E731
    call, rest = encode(images), encode(others)
    pool = torch.cat([rest[:6], call[1:2], rest[6:]])  # image 1 is also pool row 6 (never its own distractor)
    hard = DiscriminativeReward(clip_files[0], distractors=pool, hard_distractors=k)
    texts = captions(5 * per_image)
    rewards = hard(completions=texts, image=copies(images, per_image))
    assert hard.last["candidates"] == 5 + k

    neighbours = neighbours_by_hand(call, pool, k, 0.999)  # [5, k]
    index = torch.tensor([-1, 6, -3, -4, -5])  # a call image with a pool copy is that row
    game = build_game(config_of(["--clip_model", clip_files[0], "--rollouts_per_image", str(per_image)]), clipcap,
                      retriever)  # fmt: skip
    game.sender = FixedCaptions(torch.zeros(len(texts)), texts=texts)
    game.train()
    aux_input = {"image_index": index, "neighbour_images": pool[neighbours], "neighbour_index": neighbours}
    _, interaction = game(torch.zeros(5, 1), torch.arange(5), call, aux_input)
    assert torch.equal(torch.tensor(rewards), interaction.aux["reward"].float())

    everything = DiscriminativeReward(clip_files[0], distractors=pool)  # k = 0: the whole pool but the copy
    everything(completions=texts, image=copies(images, per_image))
    assert everything.last["candidates"] == 5 + len(pool) - 1


def test_a_feature_cache_is_a_pool_of_its_readable_images(tmp_path):
    from egg.zoo.discriminative_captioner.data.feature_cache import FeatureCache
    from egg.zoo.discriminative_captioner.rewards.distractors import pool_features

    directory = str(tmp_path / "cache")
    build_tiny_cache(directory)
    cache = FeatureCache(directory)
    readable = [i for i in range(len(cache)) if i not in cache.unreadable]
    assert 0 < len(readable) < len(cache)
    expected = torch.nn.functional.normalize(torch.from_numpy(np.stack([cache[i].numpy() for i in readable])), dim=-1)
    assert torch.equal(pool_features(directory), expected)


def test_verl_batch_interface_gives_the_same_rewards(clip_files):
    scorer = DiscriminativeReward(clip_files[0])
    images, texts = pictures(3), captions(6)
    compute_score = verl_reward(reward_function=scorer)
    infos = [{"image": {"bytes": png(image), "path": None}} for image in images for _ in range(2)]
    scores = compute_score(data_sources=["synthetic"] * 6, solution_strs=texts, ground_truths=[None] * 6,
                           extra_infos=infos)  # fmt: skip
    expected = scorer(completions=texts, image=copies(images, 2))
    assert [score["score"] for score in scores] == pytest.approx(expected, abs=0)
    assert [score["p_at_1"] for score in scores] == scorer.last["hits"][0].tolist()
    with pytest.raises(UsageError, match="extra_info"):
        compute_score(solution_strs=texts[:2], extra_infos=[{}, {}])


def test_the_reward_and_the_game_need_no_trl(clip_files):
    code = (
        "import sys; sys.modules['trl'] = None\n"  # any import of trl fails
        "from egg.zoo.discriminative_captioner import rewards, train\n"
        "from PIL import Image\n"
        f"scorer = rewards.DiscriminativeReward({clip_files[0]!r})\n"
        "images = [Image.new('RGB', (32, 32), c) for c in ('red', 'blue')]\n"
        "print(len(scorer(completions=['a red square', 'a blue one'], image=images)))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
