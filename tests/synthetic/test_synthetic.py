"""The synthetic world: deterministic drawing, what captions mean, and files in the real on-disk formats."""

import os
import shutil

import numpy as np
import pytest
import torch

from egg.zoo.discriminative_captioner.captioners.clipcap_checkpoint import load_clipcap_captioner
from egg.zoo.discriminative_captioner.options.parse import config_of
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.runtime.clip_loading import load_clip
from egg.zoo.discriminative_captioner.runtime.errors import UsageError
from egg.zoo.discriminative_captioner.synthetic import load_world
from egg.zoo.discriminative_captioner.synthetic import world as W


def scenes_and_images(seed):
    rng = np.random.default_rng(seed)
    scenes = W.sample_scenes(rng, 50, p_two_objects=0.4)
    return scenes, W.render(scenes, 32, rng), [W.alt_text(scenes, i, rng)[0] for i in range(50)]


def test_a_world_is_a_pure_function_of_its_seed():
    first, second, other = scenes_and_images(3), scenes_and_images(3), scenes_and_images(4)
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
    assert not np.array_equal(first[1], other[1])


def one_scene(shape, colour, size, n_objects=1, position="left", background="dark"):
    """Scenes with a single scene built from attribute names (second object: a small blue square)."""
    code = lambda names, value: names.index(value)  # noqa: E731
    second = [W.SHAPES.index("square"), W.COLOUR_NAMES.index("blue"), W.SIZE_NAMES.index("small")]
    first = [code(W.SHAPES, shape), code(W.COLOUR_NAMES, colour), code(W.SIZE_NAMES, size)]
    rows = [[f, s if n_objects == 2 else W.NO_OBJECT] for f, s in zip(first, second)]
    return W.Scenes(np.array([rows[0]]), np.array([rows[1]]), np.array([rows[2]]),
                    np.array([W.POSITION_NAMES.index(position)]), np.array([W.BACKGROUND_NAMES.index(background)]),
                    np.array([n_objects]))  # fmt: skip


def test_mentions_fit_exactly_the_scenes_they_describe():
    lone = one_scene("circle", "red", "large", position="left")
    pair = one_scene("circle", "red", "large", n_objects=2)
    red_circle = W.Mention(objects=((None, "red", "circle"),))
    assert W.matches(red_circle, lone)[0] and W.matches(red_circle, pair)[0]
    assert not W.matches(W.Mention(objects=(("small", "red", "circle"),)), lone)[0]
    assert W.matches(W.Mention(objects=((None, "red", "circle"),), position="left"), lone)[0]
    assert not W.matches(W.Mention(objects=((None, "red", "circle"),), position="top"), lone)[0]
    left_of = W.Mention(objects=((None, "red", "circle"), (None, "blue", "square")), relation="left")
    right_of = W.Mention(objects=((None, "blue", "square"), (None, "red", "circle")), relation="left")
    either = W.Mention(objects=((None, "blue", "square"), (None, "red", "circle")), relation="and")
    assert W.matches(left_of, pair)[0] and not W.matches(right_of, pair)[0] and W.matches(either, pair)[0]
    assert W.matches(W.Mention(), lone)[0]  # "digital art selected for the #" fits every scene
    assert not W.matches(W.Mention(n_objects=2), lone)[0]


def test_alt_text_is_mostly_vague_and_sometimes_names_a_colour():
    rng = np.random.default_rng(0)
    scenes = W.sample_scenes(rng, 2000, p_two_objects=0.35)
    texts = [W.alt_text(scenes, i, rng)[0] for i in range(2000)]
    colour_share = np.mean([any(c in t.split() for c in W.COLOUR_NAMES) for t in texts])
    assert 0.2 < colour_share < 0.4
    descriptions = [W.describe(scenes, i, rng)[0] for i in range(200)]
    assert all(any(c in t.split() for c in W.COLOUR_NAMES) for t in descriptions)


def test_world_files_load_through_the_real_loaders(world_cache):
    directory = next(entry.path for entry in os.scandir(world_cache) if entry.name.startswith("synthetic-"))
    model, transform = load_clip(os.path.join(directory, "retriever.pt"), "--clip_model")
    retriever = ClipRetriever(model, transform)
    assert retriever.encode_texts(["a red circle"]).shape == (1, model.text_projection.shape[1])
    opts = config_of().replace(
        clipcap_checkpoint=os.path.join(directory, "captioner.pt"),
        captioner_clip_model=os.path.join(directory, "retriever.pt"),
        language_model=os.path.join(directory, "language_model"),
        clip_download_root=None, mapping_type="auto", prefix_length=None, clip_length=None, normalize_prefix=None,
        max_len=10, stop_at_any_period=False,
    )  # fmt: skip
    captioner = load_clipcap_captioner(opts)
    features = captioner.encode_images(torch.zeros(2, 3, 32, 32))
    assert len(captioner.generate(features, num_beams=2).text) == 2


def test_a_corrupted_cache_is_reported_with_the_way_out(world_cache, tmp_path):
    source = next(entry.path for entry in os.scandir(world_cache) if entry.name.startswith("synthetic-"))
    copy = tmp_path / os.path.basename(source)
    shutil.copytree(source, copy)
    with open(copy / "retriever.pt", "r+b") as f:
        f.write(b"xx")
    with pytest.raises(UsageError, match=r"retriever\.pt is missing or corrupted; rerun with --rebuild"):
        load_world(str(tmp_path), "tiny", progress=False)
    os.remove(copy / "manifest.json")
    with pytest.raises(UsageError, match="incomplete or corrupted"):
        load_world(str(tmp_path), "tiny", progress=False)
