"""A newcomer's first hour: instant help, each command's own options, every missing file named at once, truthful
file errors, nothing overwritten, quiet and readable output."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from egg.zoo.discriminative_captioner import caption, evaluate, train
from egg.zoo.discriminative_captioner.evaluation import nlg
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..paths import ROOT

COMMANDS = {"train": train, "evaluate": evaluate, "caption": caption}


def help_of(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_imports_neither_torch_nor_transformers(command):
    found = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"egg.zoo.discriminative_captioner.{command}", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in found.stderr.splitlines() if "|" in line}
    assert "--help" in found.stdout and not imported & {"torch", "transformers", "clip", "numpy"}


TOOLS = [
    ["-m", "egg.zoo.discriminative_captioner.study"],
    ["-m", "egg.zoo.discriminative_captioner.study", "serve"],
] + [
    [os.path.join(ROOT, "data_scripts", f"{name}.py")]
    for name in ("check_data", "download", "download_conceptual", "convert_clip_to_transformers")
]


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: os.path.basename(tool[-1]))
def test_every_tool_explains_itself_in_plain_text(tool):
    found = subprocess.run([sys.executable, *tool, "--help"], capture_output=True, text=True, check=True)
    assert "usage:" in found.stdout and "``" not in found.stdout


def test_each_command_shows_its_own_options_truthfully(capsys):
    texts = {name: help_of(module, capsys) for name, module in COMMANDS.items()}
    flat = {name: " ".join(text.split()) for name, text in texts.items()}
    assert all("``" not in text for text in texts.values())
    assert "data set to train on" in flat["train"] and "--hard_distractors" in flat["train"]
    for name in ("evaluate", "caption"):
        assert "data set to train on" not in flat[name]
        for option in ("--hard_distractors", "--lr", "--n_epochs", "--greedy_rollouts", "--blip_train_vision"):
            assert option not in flat[name], (name, option)
    assert "evaluate this checkpoint of a run" in flat["evaluate"] and "optimizer" not in flat["evaluate"]
    assert "--batch_size BATCH_SIZE images captioned at a time" in flat["caption"]
    assert "--clip_model" not in flat["caption"] and "--load_from_checkpoint" not in flat["caption"]
    assert "replace an existing --output file" in flat["caption"]


def test_option_prefixes_are_refused_and_unused_options_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--n_epoch", "3"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --n_epoch 3" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--data_root is where a real data set is read from"):
        train.main(["--data_root", "/somewhere"])
    from egg.zoo.discriminative_captioner import evaluate

    with pytest.raises(UsageError, match=r"^evaluate does not use --lr, --n_epochs"):
        evaluate.main(["--lr", "0.1", "--n_epochs=3", "--max_len", "5"])


def test_a_conceptual_run_on_an_empty_machine_names_every_missing_file_at_once(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "HF_HOME": str(home / "hf"), "DISCRITUNE_DATA": str(home / "data"),
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    env.pop("DISCRITUNE_MODELS", None)
    run = home / "runs" / "cc"
    found = subprocess.run(
        [sys.executable, "-m", "egg.zoo.discriminative_captioner.train", "--dataset", "conceptual",
         "--checkpoint_dir", str(run)], capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert found.returncode == 1 and "Traceback" not in found.stderr, found.stderr
    error = found.stderr
    assert "4 files this run needs are missing" in error
    assert f"looked for: {home / 'data' / 'conceptual_captions'} (not found)" in error
    assert f"{home / 'data' / 'models' / 'conceptual_weights.pt'}" in error and "drive.google.com" in error
    assert "the hub id 'gpt2'" in error and "https://huggingface.co/gpt2" in error
    assert "ClipCap's CLIP image encoder (ViT-B-32.pt) = retriever CLIP (ViT-B-32.pt)" in error
    assert str(home / ".cache" / "clip" / "ViT-B-32.pt") in error and "openaipublic" in error
    for flag in (
        "--data_root",
        "--clipcap_checkpoint",
        "--language_model",
        "--captioner_clip_model PATH; --clip_model",
    ):
        assert f"pass a path with: {flag}" in error
    assert not run.exists() and not (home / "runs").exists()  # a failed run leaves no empty run directory


def test_the_authors_kl_reference_needs_the_language_models_weights_and_says_so(tiny_files, tmp_path):
    config_only = tmp_path / "gpt2"  # what the captioner needs: config and tokenizer, no weights
    shutil.copytree(tiny_files["language_model"], config_only,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))  # fmt: skip
    options = ["--dataset", "conceptual", "--data_root", str(tmp_path / "cc"), "--language_model", str(config_only),
               "--kl_coeff", "0.2", "--kl_reference", "language_model"]  # fmt: skip
    with pytest.raises(UsageError) as error:
        train.main(options)
    assert f"GPT-2 weights (the KL reference of --kl_reference language_model)\n      looked for: {config_only}" in (
        str(error.value)
    )  # fmt: skip
    with pytest.raises(UsageError) as error:  # without a KL penalty the weights are not needed
        train.main(options[:-4])
    assert "GPT-2 weights" not in str(error.value)


class Pickled:
    """An object that torch.save pickles whole (what a whole saved model is)."""


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("some notes\n"), r"is a text file, not a ClipCap state dict"),
        (lambda p: torch.save({"model": Pickled()}, p), r"PyTorch file holding Python objects \(.*Pickled\)"),
        (lambda p: torch.save({"x": torch.zeros(1)}, p), r"is a PyTorch file but not a ClipCap state dict"),
        (lambda p: p.mkdir(), r"a directory, not a file"),
    ],
)
def test_a_bad_captioner_file_is_said_to_be_what_it_is(make, message, tiny_run_args, tmp_path):
    path = tmp_path / "notes"
    make(path)
    with pytest.raises(UsageError) as error:
        train.main(tiny_run_args + ["--clipcap_checkpoint", str(path)])
    text = " ".join(str(error.value).replace("it is", "is").split())
    assert __import__("re").search(message, text), text
    assert "weights_only" not in text


def test_a_relative_path_that_does_not_exist_is_reported_where_it_was_looked_for(tiny_run_args, tmp_path,
                                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCRITUNE_MODELS", str(tmp_path / "models"))
    with pytest.raises(UsageError) as error:
        train.main(tiny_run_args + ["--clipcap_checkpoint", "mine.pt"])
    text = str(error.value)
    assert f"looked for: {tmp_path / 'mine.pt'} and {tmp_path / 'models' / 'mine.pt'}" in text
    assert "a ClipCap .pt file of yours" in text


@pytest.fixture(scope="module")
def finished_run(world_cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("first-hour") / "run"
    args = ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--n_epochs", "1", "--batch_size", "50",
            "--max_len", "6", "--num_beams", "2", "--checkpoint_dir", str(run)]  # fmt: skip
    completed = subprocess.run([sys.executable, "-m", "egg.zoo.discriminative_captioner.train", *args],
                               capture_output=True, text=True, check=True)  # fmt: skip
    return run, completed.stdout


def test_the_console_rounds_and_the_run_log_keeps_full_precision(finished_run):
    run, stdout = finished_run
    printed = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [line["mode"] for line in printed] == [line["mode"] for line in logged] == ["test", "train", "test", "final"]
    for short, full in zip(printed, logged):
        assert short.keys() == full.keys()
        for key, value in full.items():
            if isinstance(value, float):
                assert short[key] == float(f"{value:.4g}")
    assert any(isinstance(v, float) and v != float(f"{v:.4g}") for line in logged for v in line.values())
    assert stdout.splitlines()[-1].startswith(f"run in {run}/: checkpoints final.tar")
    assert f"the finetuned captioner {run / 'clipcap.pt'}" in stdout.splitlines()[-1]


def test_caption_a_run_directory_needs_no_data_set(finished_run, tmp_path, capsys, monkeypatch):
    run, _ = finished_run
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    # a finetuned model's data set need not exist: a Conceptual Captions model captions photos without CC on disk
    monkeypatch.setenv("DISCRITUNE_DATA", str(tmp_path / "no-data"))  # where no data set is
    rows = caption.main(["--model", str(run), "--dataset", "conceptual", "--num_beams", "2", "--max_len", "6",
                         str(image)])  # fmt: skip
    from_checkpoint = caption.main(["--model", str(run / "final.tar"), "--num_beams", "2", "--max_len", "6",
                                    "--dataset", "coco", str(image)])  # fmt: skip
    assert [r["caption"] for r in rows] == [r["caption"] for r in from_checkpoint] and rows[0]["caption"]
    out = tmp_path / "captions.jsonl"
    out.write_text("earlier\n")
    with pytest.raises(UsageError, match="--output .*captions.jsonl exists: .*--overwrite"):
        caption.main(["--model", str(run), "--output", str(out), str(image)])
    assert out.read_text() == "earlier\n"
    caption.main(["--model", str(run), "--output", str(out), "--overwrite", "--num_beams", "2", str(image)])
    assert json.loads(out.read_text())["image"] == str(image)
    with pytest.raises(UsageError, match="is a directory, but neither a run directory"):
        caption.main(["--model", str(tmp_path), str(image)])


def test_evaluate_never_mixes_two_evaluations(finished_run, tiny_world_args, tmp_path, capfd):
    run, _ = finished_run
    out = tmp_path / "evaluation"
    args = tiny_world_args + ["--models", str(run), "--output_dir", str(out), "--no-spice", "--hard_sets", "5",
                            "--near_duplicate_cosine", "1.0"]  # fmt: skip
    evaluate.main(args)
    printed = capfd.readouterr()
    assert "PTBTokenizer" not in printed.out + printed.err and "ratio:" not in printed.out  # pycocoevalcap is quiet
    first = (out / "results.json").read_text()
    (out / "stimuli_synthetic_old_source").mkdir()  # what an earlier evaluation of other data left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds the results of an earlier evaluation .*--overwrite"):
        evaluate.main(args)
    assert (out / "results.json").read_text() == first
    evaluate.main(args + ["--overwrite", "--no-nlg"])
    assert not (out / "stimuli_synthetic_old_source").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "results.json").read_text())[0]["bleu4"] is None  # the new evaluation's
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".partial")]


def test_spice_is_tried_once_per_process(monkeypatch):
    from urllib.error import URLError

    from pycocoevalcap.spice import spice

    calls = []

    def offline_download():
        calls.append(1)
        raise URLError("offline")

    monkeypatch.setattr(spice, "get_stanford_models", offline_download)
    monkeypatch.setattr(nlg, "_spice_failure", None)
    captions, references = {"a": "a red square", "b": "a blue circle"}, {"a": ["a red square"], "b": ["a circle"]}
    first, second = (nlg.caption_metrics(captions, references) for _ in range(2))
    assert calls == [1] and first["spice"] is None and first["spice_error"] == second["spice_error"]
    assert "offline" in first["spice_error"] and first["bleu4"] == second["bleu4"]
