"""Evaluation pieces against independent references: P@1 on hand-made embeddings, the candidate sets, NLG metrics
against pycocoevalcap's own scorers, LMI against hand-computed values, hard sets and their stimuli."""

import json
import math
import shutil

import pytest
import torch

from egg.zoo.discriminative_captioner.data import retrieval_batches
from egg.zoo.discriminative_captioner.evaluation import hard, nlg
from egg.zoo.discriminative_captioner.evaluation.analysis import Lemmatizer, local_mutual_information, top_lemmas
from egg.zoo.discriminative_captioner.evaluation.retrieval import precision_at_1, strict_hits

java = pytest.mark.skipif(shutil.which("java") is None, reason="PTBTokenizer and METEOR need Java")


def one_hot(n, dim=None):
    return torch.eye(dim or n)[:n]


@pytest.mark.parametrize("n", [100, 250, 1037])
def test_every_image_is_the_target_exactly_once_and_never_its_own_distractor(n):
    batches = retrieval_batches(n, 100, seed=3)
    targets = [i for t, _ in batches for i in t]
    assert sorted(targets) == list(range(n))
    for t, fillers in batches:
        assert len(t) + len(fillers) == 100  # always 100 candidates
        assert len(set(t + fillers)) == 100  # no image twice, so no target among its own distractors
    assert batches == retrieval_batches(n, 100, seed=3)  # seeded
    assert batches != retrieval_batches(n, 100, seed=4)


def test_remainder_fillers_come_from_the_rest_of_the_split():
    batches = retrieval_batches(250, 100, seed=0)
    remainder, fillers = batches[-1]
    assert len(remainder) == 50 and len(fillers) == 50
    full = {i for t, _ in batches[:-1] for i in t}
    assert set(fillers) <= full and not set(fillers) & set(remainder)


def test_retrieval_loader_gives_the_game_each_target_once_with_100_candidates():
    from egg.zoo.discriminative_captioner.data import EncodedSplit, ImageSplit, retrieval_loader

    n = 130
    split = ImageSplit("test", [None] * n, [["ref"]] * n)
    dataset = EncodedSplit(split, torch.arange(n).float().view(-1, 1), torch.eye(n))
    batches = list(retrieval_loader(dataset, 100, seed=1))
    assert torch.cat([aux["image_index"] for *_, aux in batches]).sort().values.tolist() == list(range(n))
    for (sender, labels, receiver, aux), (targets, fillers) in zip(batches, retrieval_batches(n, 100, seed=1)):
        assert receiver.shape == (100, n) and labels.tolist() == list(range(len(targets)))
        assert aux["image_index"].tolist() == targets and sender.view(-1).long().tolist() == targets
        assert receiver.argmax(dim=1).tolist() == targets + fillers  # target t is candidate t, fillers after


def test_p_at_1_on_hand_made_embeddings_scores_every_image():
    # 250 images (not a multiple of 100): orthogonal image embeddings; captions of images 0..99 and of the 50
    # remainder-set images point at their own image, the others at nothing (an all-zero caption ties everywhere).
    n = 250
    images = one_hot(n)
    order = [i for t, _ in retrieval_batches(n, 100, seed=0) for i in t]
    good = set(order[:100]) | set(order[200:])  # the first full set and the remainder set
    texts = torch.stack([images[i] if i in good else torch.zeros(n) for i in range(n)])
    p, hits = precision_at_1(texts, images, candidates=100, seed=0)
    assert hits.tolist() == [i in good for i in range(n)]
    assert p == pytest.approx(150 / 250)


def test_p_at_1_over_some_targets_keeps_every_image_a_candidate():
    # Human P@1 where most images have no reference: only described targets count, every image stays a candidate.
    n = 250
    images = one_hot(n)
    described = torch.zeros(n, dtype=torch.bool)
    described[::10] = True  # 25 images have a reference
    texts = torch.stack([images[i] if described[i] else torch.zeros(n) for i in range(n)])
    texts[0] = images[1]  # one described image's caption points at an undescribed candidate: a miss
    p, hits = precision_at_1(texts, images, candidates=100, seed=0, targets=described)
    assert p == pytest.approx(24 / 25)  # over the whole split it would be 24 / 250
    assert hits.tolist() == precision_at_1(texts, images, candidates=100, seed=0)[1].tolist()  # the same sets
    assert precision_at_1(texts, images, targets=torch.zeros(n, dtype=torch.bool))[0] is None
    with pytest.raises(ValueError, match="one bool per image"):
        precision_at_1(texts, images, targets=described[:10])


def test_the_remainder_targets_are_scored_against_their_fillers():
    # Caption of every image points at a fixed image z; z is a hit for itself, any other target misses exactly
    # when z is among its candidates. With 130 images, every image is a target; z = the first image of the
    # remainder set's fillers.
    n = 130
    batches = retrieval_batches(n, 100, seed=1)
    remainder, fillers = batches[-1]
    z = fillers[0]
    images = one_hot(n)
    texts = images[z].repeat(n, 1)
    _, hits = precision_at_1(texts, images, candidates=100, seed=1)
    assert not hits[remainder].any()  # z (a filler) wins over every remainder target
    assert hits[z] and hits.sum() == 1


def test_a_tie_is_a_miss():
    scores = torch.tensor([[0.5, 0.5, 0.1], [0.9, 0.2, 0.3], [0.1, 0.2, 0.3]])
    assert strict_hits(scores, torch.tensor([0, 0, 2])).tolist() == [False, True, True]
    texts = torch.ones(200, 4)  # every caption scores every image the same
    images = torch.nn.functional.normalize(torch.ones(200, 4), dim=1)
    assert precision_at_1(texts, images, candidates=100, seed=0)[0] == 0.0  # argmax would give 1%


CAPTIONS = {"1": "A red circle on the left.", "2": "two shapes, a square and a cross", "3": "logo design"}
REFERENCES = {
    "1": ["a small red circle on the left", "A red circle."],
    "2": ["a blue square and a green cross", "two geometric shapes"],
    "3": ["logo design", "an illustration of a triangle"],
}


@java
def test_nlg_metrics_equal_pycocoevalcap_scorers():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in CAPTIONS.items()})
    gts = tokenizer.tokenize({k: [{"caption": r} for r in refs] for k, refs in REFERENCES.items()})
    expected = {
        "bleu4": Bleu(4).compute_score(gts, res)[0][3],
        "meteor": Meteor().compute_score(gts, res)[0],
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }
    found = nlg.caption_metrics(CAPTIONS, REFERENCES, spice=False)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, abs=1e-12), key
    assert found["cider"] > 0 and found["spice"] is None and "switched off" in found["spice_error"]


@java
def test_spice_is_computed_or_reported_with_its_fix():
    found = nlg.caption_metrics(CAPTIONS, REFERENCES, spice=True)
    assert found["cider"] > 0
    if found["spice"] is None:
        assert "stanford-corenlp-3.6.0.jar" in found["spice_error"]
    else:
        assert 0 <= found["spice"] <= 1 and found["spice_error"] is None


def test_lmi_on_a_tiny_corpus_equals_hand_computed_values():
    counts = {"human": {"logo": 3, "red": 1}, "discritune": {"red": 4}}
    lmi = local_mutual_information(counts)
    # N = 8; R(red) = 5, R(logo) = 3; C(human) = 4, C(discritune) = 4.
    assert lmi["human"]["logo"] == pytest.approx(3 * math.log2(3 / (3 * 4 / 8)))
    assert lmi["human"]["red"] == pytest.approx(1 * math.log2(1 / (5 * 4 / 8)))
    assert lmi["discritune"]["red"] == pytest.approx(4 * math.log2(4 / (5 * 4 / 8)))
    assert "logo" not in lmi["discritune"]


def test_top_lemmas_rank_each_types_own_words_first():
    corpora = {
        "human": ["logo design", "the circle is a symbol of the brand", "logo design"],
        "discritune": ["a small red circle", "a large blue square", "red squares"],
    }
    tables = top_lemmas(corpora, Lemmatizer(), k=3)
    words = {kind: [lemma for lemma, _ in rows] for kind, rows in next(iter(tables["tables"].values())).items()}
    assert words["discritune"][0] in ("red", "square") and "logo" in words["human"][:2]
    if tables["note"]:  # the fallback: plural stripped, function words left out
        assert "square" in words["discritune"] and "a" not in words["discritune"]


def test_nearest_neighbour_sets_skip_near_duplicates_and_never_repeat_an_image():
    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(60, 16), dim=1)
    duplicates = torch.nn.functional.normalize(base[:5] + 0.01 * torch.randn(5, 16), dim=1)  # cosine ~1
    embeddings = torch.cat([base, duplicates])
    sets = hard.nearest_neighbour_sets(embeddings, n_sets=65, max_cosine=0.8, seed=0)
    assert len(sets) >= 3
    used = [i for s in sets for i in s.indices]
    assert len(used) == len(set(used))  # disjoint sets
    for s in sets:
        chosen = embeddings[s.indices]
        assert len(s.indices) == 10 and s.target == 0 and (chosen @ chosen.T - 2 * torch.eye(10)).max() <= 0.8
    # the first set, brute force: walk all images by decreasing cosine to the target, keep the admissible ones
    target = sets[0].indices[0]
    kept = [target]
    for j in sorted(range(65), key=lambda j: -float(embeddings[j] @ embeddings[target])):
        if j != target and len(kept) < 10 and all(float(embeddings[j] @ embeddings[k]) <= 0.8 for k in kept):
            kept.append(j)
    assert sets[0].indices == kept


def test_targets_are_drawn_until_as_many_sets_as_asked_exist_or_the_split_runs_out():
    embeddings = torch.nn.functional.normalize(torch.randn(1000, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    sets = hard.nearest_neighbour_sets(embeddings, n_sets=60, max_cosine=1.0)
    assert len(sets) == 60 and sets.note is None
    assert sets.counts.targets_drawn > 60  # targets already in a set, or short, were passed over, not counted
    every = hard.nearest_neighbour_sets(embeddings, n_sets=500, max_cosine=1.0)  # more than 1000 images allow
    assert every.counts.targets_drawn == 1000 and 60 < len(every) < 100  # every image was drawn as a target
    assert every[:60] == list(sets) and every.note.startswith(f"{len(every)} of 500 asked (1000 images, at most 100")


def test_hard_set_accuracy_and_stimuli_format(tmp_path):
    from PIL import Image

    from egg.zoo.discriminative_captioner.data import ImageSplit

    n = 20
    images = one_hot(n)
    split = ImageSplit("test", [Image.new("RGB", (8, 8), (i * 10, 0, 0)) for i in range(n)],
                       [[f"ref {i}"] for i in range(n)], ids=[f"img{i}" for i in range(n)])  # fmt: skip
    sets = [hard.HardSet(list(range(10)), 3), hard.HardSet(list(range(10, 20)), 0)]
    texts = images.clone()
    texts[10] = images[11]  # the second set's target caption points at a distractor
    p, scores = hard.hard_set_accuracy(texts, images, sets)
    assert p == 0.5 and scores.shape == (2, 10)
    captions = {"human": [f"ref {i}" for i in range(n)], "discritune": [f"cap {i}" for i in range(n)]}
    path = hard.write_stimuli(str(tmp_path), sets, split, captions, {"human": scores, "discritune": scores},
                              dataset="toy", source="nearest_neighbours")  # fmt: skip
    stimuli = json.loads(open(path).read())
    assert stimuli["format"] == "discritune-stimuli/1" and stimuli["conditions"] == ["human", "discritune"]
    assert (stimuli["dataset"], stimuli["split"], stimuli["source"]) == ("toy", "test", "nearest_neighbours")
    first = stimuli["sets"][0]
    assert first["set_id"] == "s0000" and first["target"] == 3 and len(first["images"]) == 10
    assert first["image_ids"][3] == "img3" and first["captions"] == {"human": "ref 3", "discritune": "cap 3"}
    assert len(first["retriever_scores"]["human"]) == 10
    for relative in first["images"]:
        assert Image.open(tmp_path / relative).size == (8, 8)
