"""The tiny synthetic world is small but not degenerate, so the runs that other tests compare learn something.

Its earlier retriever put every test image at nearly one point (pairwise cosine 0.9993-1.0): every caption was the
same, P@1 was chance for every kind of caption and no hard set survived the near-duplicate filter.  Measured on a
2-core CPU, the tiny world now gives a mean pairwise cosine of about 0.4, human P@1 about 4.4%, the pretrained
captioner about 5% and one tiny epoch of DiscriTune about 5.5-6% (chance 1%), and 40 hard sets under the
default near-duplicate threshold.  The thresholds below sit well under those figures and well over the
degenerate world's, so that another machine's rounding (which changes the trajectories) still passes.
"""

import os

import pytest
import torch

from egg.zoo.discriminative_captioner import evaluate, train
from egg.zoo.discriminative_captioner.data import ImageSplit, encode_images
from egg.zoo.discriminative_captioner.evaluation import hard
from egg.zoo.discriminative_captioner.evaluation.pipeline import hard_sets_of
from egg.zoo.discriminative_captioner.evaluation.retrieval import encode_captions, precision_at_1
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.runtime.clip_loading import load_clip
from egg.zoo.discriminative_captioner.synthetic import load_world

CHANCE = 1 / 100  # P@1 among 100 candidates


@pytest.fixture(scope="module")
def tiny_test(world_cache):
    """``(split, retriever, image embeddings [N, D])`` of the tiny world's test split, as ``evaluate`` sees it."""
    world = load_world(world_cache, "tiny", progress=False)
    split = world.split("test")
    model, transform = load_clip(os.path.join(world.directory, "retriever.pt"), "--clip_model")
    retriever = ClipRetriever(model, transform)
    return split, retriever, encode_images(split, retriever.image_transform, retriever.encode_images)


def evaluation_opts(tiny_world_args):
    """``evaluate``'s options at their defaults (``--hard_sets``, ``--near_duplicate_cosine``, ``--eval_seed``)."""
    return get_opts(tiny_world_args, extra_options=evaluate.add_evaluation_options, command="evaluate")


def test_the_retriever_spreads_the_test_images(tiny_test):
    _, _, images = tiny_test
    cosine = images @ images.T  # [N, N], the embeddings are normalised
    off_diagonal = cosine[~torch.eye(len(images), dtype=torch.bool)]
    assert off_diagonal.mean() < 0.7 and off_diagonal.min() < 0.2


def test_human_captions_find_their_image_well_above_chance(tiny_test):
    split, retriever, images = tiny_test
    references = encode_captions(retriever, [refs[0] for refs in split.references])
    p_at_1, _ = precision_at_1(references, images)
    assert p_at_1 >= 2.5 * CHANCE


def test_evaluate_finds_hard_sets_under_the_default_near_duplicate_threshold(tiny_test, tiny_world_args, capsys):
    split, _, images = tiny_test
    opts = evaluation_opts(tiny_world_args)
    sets = hard_sets_of("synthetic", split, images, opts)["nearest_neighbours"]
    assert len(sets) >= 20  # disjoint sets of 10 from the split: at most len(split) // 10
    for s in sets:
        chosen = images[s.indices]
        assert (chosen @ chosen.T - 2 * torch.eye(len(s.indices))).max() <= opts.near_duplicate_cosine
    if len(sets) < opts.hard_sets:  # the default asks for more than a small split holds: evaluate says why
        assert sets.note.startswith(f"{len(sets)} of {opts.hard_sets} asked ({len(split)} images")
        assert f"hard sets synthetic: {sets.note}\n" in capsys.readouterr().out


def test_one_tiny_epoch_of_discritune_retrieves_well_above_chance(tiny_run_args):
    results = train.main(tiny_run_args)  # the test split's P@1 of the finetuned captioner
    assert results["acc"] >= 2.5 * CHANCE


def clusters(n_clusters, size, dim=16, seed=0):
    """``n_clusters * size`` embeddings: ``size`` near-copies (cosine ~1) of each of ``n_clusters`` directions."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, dim, generator=generator), dim=1)
    copies = centres.repeat_interleave(size, 0) + 0.01 * torch.randn(n_clusters * size, dim, generator=generator)
    return torch.nn.functional.normalize(copies, dim=1)


def test_the_counts_say_why_sets_fell_short():
    # 8 directions seen 5 times each: no 10 images are pairwise below 0.8, so every target falls short for
    # near-duplicates
    sets = hard.nearest_neighbour_sets(clusters(8, 5), n_sets=500, max_cosine=0.8)
    counts = sets.counts
    assert len(sets) == 0 and (counts.targets_drawn, counts.short_near_duplicates, counts.short_images_used) == (
        40, 40, 0
    )  # fmt: skip
    assert counts.note(threshold="--near_duplicate_cosine").startswith("0 of 500 asked (40 images, at most 4")
    assert "40 for near-duplicates above --near_duplicate_cosine 0.8" in counts.note("--near_duplicate_cosine")
    # no near-duplicates at all: the split runs out of images not yet in a set
    sets = hard.nearest_neighbour_sets(clusters(25, 1), n_sets=500, max_cosine=1.0)
    counts = sets.counts
    assert len(sets) == counts.built == 2 and counts.short_near_duplicates == 0
    assert counts.built + counts.target_in_a_set + counts.short_images_used == counts.targets_drawn == 25
    # as many as asked: nothing to say
    assert hard.nearest_neighbour_sets(clusters(25, 1), n_sets=1, max_cosine=1.0).note is None


def test_a_split_too_small_for_one_set_is_said_so(tiny_world_args, capsys):
    split, opts = ImageSplit("test", [None] * 7, [["a caption"]] * 7), evaluation_opts(tiny_world_args)
    assert hard_sets_of("synthetic", split, torch.zeros(7, 4), opts) == {}
    said = capsys.readouterr().out
    assert f"hard sets synthetic: none of {opts.hard_sets} asked (the test split has 7 images" in said
