"""Language-drift metrics against hand counts and against a tiny GPT-2's own forward (float64 sums), and ``evaluate``
on the tiny synthetic world reporting CLIP-S, RefCLIP-S and drift of the very captions it wrote."""

import json
import math
import os
import re
import types

import pytest
import torch

from egg.zoo.discriminative_captioner import evaluate
from egg.zoo.discriminative_captioner.evaluation import clip_score, drift
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..tiny_models import save_language_model


def test_distinct_n_and_vocabulary_count_lower_cased_words_within_captions():
    captions = ["A red circle.", "a red square", "Blue!", ""]
    # words: [a, red, circle], [a, red, square], [blue], []; no bigram spans two captions
    assert drift.distinct_n(captions, 1) == 5 / 7  # a, red, circle, square, blue among 7 words
    assert drift.distinct_n(captions, 2) == 3 / 4  # (a red) twice, (red circle), (red square)
    assert drift.vocabulary(captions) == 5
    assert drift.distinct_n(["one"], 2) is None and drift.distinct_n([], 1) is None and drift.vocabulary([]) == 0


@pytest.fixture(scope="module")
def language_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2")
    save_language_model(str(directory))
    return str(directory)


def direct_nll(model, ids):
    """The summed NLL of ``ids[1:]`` given the tokens before each, from one unpadded forward, in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()  # [T, V]
    return -logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).sum().item()


def test_nll_is_the_token_weighted_mean_of_the_language_models_own_log_probs(language_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    captions = ["a red circle on a dark background.", "two dogs.", "x", "", "an illustration of a green triangle."]
    lm = drift.load_language_model(language_model_dir)  # HF_HUB_OFFLINE: a local folder loads offline
    model = AutoModelForCausalLM.from_pretrained(language_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(language_model_dir)
    assert lm.bos_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    rows = [[lm.bos_id] + tokenizer(c)["input_ids"] for c in captions]
    expected_total = sum(direct_nll(model, row) for row in rows if len(row) > 1)
    expected_count = sum(len(row) - 1 for row in rows)
    total, count = lm.total_nll(captions, batch_size=2)  # padded batches, one caption alone at the end
    assert count == expected_count and total == pytest.approx(expected_total, rel=1e-6)
    metrics = drift.drift_metrics(captions, lm)
    assert metrics["lm_nll"] == pytest.approx(expected_total / expected_count, rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected_total / expected_count), rel=1e-6)
    assert drift.drift_metrics(captions)["lm_nll"] is None  # no language model: no NLL, the rest still counted


def test_a_caption_longer_than_the_context_keeps_its_first_tokens(language_model_dir):
    from transformers import AutoModelForCausalLM

    lm = drift.load_language_model(language_model_dir)
    long = " ".join(["a red circle on a dark background."] * 20)
    ids = lm.token_ids(long)
    assert len(ids) == lm.context == 64  # the tiny GPT-2's n_positions
    total, count = lm.total_nll([long])
    model = AutoModelForCausalLM.from_pretrained(language_model_dir).eval()
    assert count == 63 and total == pytest.approx(direct_nll(model, ids), rel=1e-6)


def test_a_language_model_that_cannot_load_is_one_line_naming_it_and_the_flag(tmp_path, language_model_dir):
    for source in ("no-such-org/no-such-language-model", str(tmp_path / "absent")):
        with pytest.raises(UsageError, match=rf"{re.escape(source)}.*{drift.FLAG}.*{drift.FLAG} none") as error:
            drift.load_language_model(source)
        assert "\n" not in str(error.value)
    models = drift.LanguageModels()
    assert models.get("none", language_model_dir) is None and models.get("None", None) is None
    assert models.get(None, language_model_dir) is models.get(language_model_dir, "unused")  # loaded once


def test_evaluate_refuses_an_unloadable_drift_language_model_before_any_work(tiny_world_args, tmp_path):
    with pytest.raises(UsageError, match=r"no-such-org/no-such-lm.*--drift_language_model"):
        evaluate.main(tiny_world_args + ["--drift_language_model", "no-such-org/no-such-lm", "--no-nlg",
                                         "--hard_sets", "0", "--output_dir", str(tmp_path / "eval")])  # fmt: skip
    assert not (tmp_path / "eval" / "results.json").exists()


def pipeline_images(opts):
    """The evaluation retriever and its image embeddings of the test split, read as ``evaluate`` reads them."""
    from egg.zoo.discriminative_captioner.data import load_dataset
    from egg.zoo.discriminative_captioner.experiment import Experiment, encode_split
    from egg.zoo.discriminative_captioner.retrievers import build_retriever

    dataset = load_dataset(opts)
    resolved = opts.with_model_defaults(dataset.model_defaults(opts))
    retriever = build_retriever(resolved)
    retrieval_only = types.SimpleNamespace(cache_inputs=False, image_transform=None)
    encoded = encode_split(Experiment(dataset, retrieval_only, retriever, resolved), "test", "cpu")
    return retriever, encoded.receiver_inputs[:], resolved


def test_evaluate_reports_clip_scores_and_drift_of_the_captions_it_wrote(tiny_world_args, tmp_path):
    from egg.zoo.discriminative_captioner.options.parse import get_opts

    out = tmp_path / "eval"
    records = evaluate.main(tiny_world_args + ["--no-nlg", "--hard_sets", "0", "--output_dir", str(out)])
    (record,) = json.loads((out / "results.json").read_text())
    assert record == records[0]
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    captions, references = [row["caption"] for row in rows], [row["references"] for row in rows]
    first = [refs[0] for refs in references if refs]

    opts = get_opts(tiny_world_args, extra_options=evaluate.add_evaluation_options, command="evaluate")
    retriever, images, resolved = pipeline_images(opts)
    # the world's own language model, with no flag: evaluate ran offline
    assert record["drift_language_model"] == resolved.language_model
    assert os.path.isdir(resolved.language_model)
    lm = drift.load_language_model(resolved.language_model)
    scores = clip_score.caption_scores(retriever, images, {"model": captions, "human": first}, references, "human")
    expected = scores["model"] | drift.drift_metrics(captions, lm)
    expected |= {"clip_s_references": scores["human"]["clip_s"]}
    expected |= {f"{key}_references": value for key, value in drift.drift_metrics(first, lm).items()}
    for key, value in expected.items():
        assert record[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    for key in ("clip_s", "ref_clip_s", "lm_nll", "perplexity", "distinct_1", "distinct_2", "vocabulary"):
        assert record[key] is not None, key
    assert 0 < record["clip_s"] <= clip_score.WEIGHT and record["perplexity"] == pytest.approx(
        math.exp(record["lm_nll"]))
    tables = (out / "tables.md").read_text()
    assert "| Model | CLIP-S | RefCLIP-S |" in tables and "| Model | NLL | PPL | D-1 | D-2 | Vocabulary |" in tables
    assert f"| pretrained | {100 * record['clip_s']:.1f} | {100 * record['ref_clip_s']:.1f} |" in tables
