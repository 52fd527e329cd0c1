"""``evaluate`` end to end on the tiny synthetic world: both domains, several models, every output file."""

import json
import os

import pytest

from egg.zoo.discriminative_captioner import evaluate, train
from egg.zoo.discriminative_captioner.runtime.errors import UsageError
from egg.zoo.discriminative_captioner.synthetic import PRESETS

# Hard sets under the default near-duplicate threshold: the tiny world's retriever spreads its images.
EVAL_ARGS = ["--hard_sets", "20", "--no-spice"]
N_TEST = PRESETS["tiny"][0].n_test  # both domains' test splits


@pytest.fixture(scope="module")
def finetuned_run(world_cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    args = ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--n_epochs", "1", "--batch_size", "50",
            "--max_len", "6", "--num_beams", "2", "--checkpoint_dir", str(run)]  # fmt: skip
    train.main(args)
    return run


def test_evaluate_writes_records_tables_captions_stimuli_and_plots(tiny_world_args, finetuned_run, tmp_path, capsys):
    out = tmp_path / "eval"
    records = evaluate.main(tiny_world_args + EVAL_ARGS + [
        "--models", "pretrained", f"discritune={finetuned_run}/final.tar", f"clipcap={finetuned_run}/clipcap.pt",
        "--datasets", "synthetic", "synthetic_descriptive", "--output_dir", str(out)])  # fmt: skip
    assert [(r["model"], r["dataset"]) for r in records] == [
        (m, d) for d in ("synthetic", "synthetic_descriptive") for m in ("pretrained", "discritune", "clipcap")
    ]
    for r in records:
        assert r["n_images"] == N_TEST and r["candidates"] == 100
        for key in ("p_at_1", "p_at_1_references", "bleu4", "meteor", "rouge_l", "cider", "p_at_1_nearest_neighbours"):
            assert 0 <= r[key] <= 10, key
        assert r["spice"] is None and r["spice_error"]
    # the finetuned run's ClipCap file and its EGG checkpoint are the same captioner (the run's own LM and CLIP)
    by = {(r["model"], r["dataset"]): r for r in records}
    assert by["clipcap", "synthetic"]["p_at_1"] == by["discritune", "synthetic"]["p_at_1"]
    assert by["clipcap", "synthetic"]["cider"] == pytest.approx(by["discritune", "synthetic"]["cider"])
    assert json.loads((out / "results.json").read_text()) == records
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * N_TEST and {"model", "dataset", "image_id", "caption", "references"} <= set(rows[0])
    descriptive = [row for row in rows if row["dataset"] == "synthetic_descriptive"]
    assert all(len(row["references"]) == 5 for row in descriptive)
    tables = (out / "tables.md").read_text()
    assert "Human captions" in tables and "| **synthetic_descriptive** |" in tables and "Protocol:" in tables
    assert "tie" in capsys.readouterr().out
    stimuli = json.loads((out / "stimuli_synthetic_nearest_neighbours" / "stimuli.json").read_text())
    assert stimuli["format"] == "discritune-stimuli/1"
    assert stimuli["conditions"] == ["human", "pretrained", "discritune", "clipcap"]
    assert all(os.path.isfile(out / "stimuli_synthetic_nearest_neighbours" / p) for p in stimuli["sets"][0]["images"])
    assert (out / "p_at_1.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["lemmas"]) == {"synthetic", "synthetic_descriptive"}
    hard_sets = summary["hard_sets"]["synthetic"]["nearest_neighbours"]  # the stimuli where they are, not staged
    assert hard_sets["stimuli"] == str(out / "stimuli_synthetic_nearest_neighbours" / "stimuli.json")


def test_training_curves_from_a_log(tiny_world_args, tmp_path):
    log = tmp_path / "train.log"
    log.write_text('noise\n{"loss": 1, "acc": 0.1, "reward": -3, "mode": "test", "epoch": 0}\n'
                   '{"loss": 1, "acc": 0.3, "reward": -2, "mode": "train", "epoch": 1}\n'
                   '{"loss": 1, "acc": 0.4, "reward": -1, "mode": "test", "epoch": 1}\n')  # fmt: skip
    out = tmp_path / "eval"
    options = ["--no-nlg", "--hard_sets", "0", "--training_log", str(log), "--output_dir", str(out)]
    evaluate.main(tiny_world_args + options)
    assert (out / "training_train.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "/nonexistent/final.tar"], "no such file"),
        (["--datasets", "nope"], "unknown --datasets"),
        (["--models", "pretrained", "pretrained"], "its own LABEL"),
        (["--training_log", "/nonexistent.log"], "no such file"),
        (["--near_duplicate_cosine", "0"], "near_duplicate_cosine"),
    ],
)
def test_bad_evaluation_options_are_one_line_errors(tiny_world_args, tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        evaluate.main(tiny_world_args + ["--output_dir", str(tmp_path / "eval")] + extra)
    assert not (tmp_path / "eval" / "results.json").exists()
