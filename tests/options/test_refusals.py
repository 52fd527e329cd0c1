"""No option accepted and ignored, every bad model folder in one line, ``caption``'s exit status, and a feature
cache per retriever: each driven through the command line as a user would, checking the exit, the one line and
its fix, and that nothing was written."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from egg.zoo.discriminative_captioner import caption, evaluate, train

from ..refusals import refused as refused_call
from ..tiny_hf_captioners import save_vit_gpt2
from ..tiny_models import save_language_model, save_openai_clip, save_siglip


def refused(command, args, *fragments):
    """Runs ``command.main(args)``, which must refuse in one line holding every fragment; returns the line."""
    return refused_call(lambda: command.main(args), *fragments)


# ---- options that would have no effect


@pytest.mark.parametrize("extra, needs", [
    (["--hf_model", "some/model"], "--hf_model needs --captioner hf"),
    (["--lora_rank", "4", "--merge_lora"], "--lora_rank, --merge_lora need --captioner hf"),
    (["--blip_model", "x"], "--blip_model needs --captioner blip"),
    (["--captioner", "hf", "--clipcap_checkpoint", "x.pt"], "--clipcap_checkpoint needs --captioner clipcap"),
    (["--retriever_mix", "alternate"], "--retriever_mix alternate mixes several retrievers"),
    (["--clip_pretrained", "w.pt"], "--clip_pretrained names open_clip weights"),
])  # fmt: skip
def test_an_option_with_no_effect_is_refused_saying_what_it_needs(extra, needs, tiny_run_args, tmp_path):
    run = tmp_path / "run"
    refused(train, tiny_run_args + ["--checkpoint_dir", str(run)] + extra, needs)
    assert not run.exists()


def test_a_command_refuses_the_options_it_does_not_use_and_its_help_leaves_them_out(tmp_path, capsys):
    refused(caption, [str(tmp_path), "--lora_rank", "4"], "caption does not use --lora_rank")
    refused(evaluate, ["--lr", "0.1", "--n_epochs=3"], "evaluate does not use --lr, --n_epochs")
    for command in (caption, evaluate):
        with pytest.raises(SystemExit):
            command.main(["--help"])
        text = capsys.readouterr().out
        for option in ("--lora_rank", "--merge_lora", "--hf_train_vision", "--gradient_checkpointing", "--lr "):
            assert option not in text, (command.__name__, option)


# ---- model folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    good = root / "captioner"
    save_vit_gpt2(good)
    made = {"good": good}
    for name, drop in (("no_processor", ["preprocessor_config.json"]), ("no_weights", ["model.safetensors"]),
                       ("no_tokenizer", ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]),
                       ("no_config", ["config.json"])):
        copy = root / name
        shutil.copytree(good, copy)
        for file in drop:
            (copy / file).unlink(missing_ok=True)
        made[name] = copy
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    made["truncated"] = truncated
    save_siglip(str(root / "siglip"))
    made["siglip"] = root / "siglip"
    save_language_model(str(root / "gpt2"))
    made["gpt2"] = root / "gpt2"
    return made


@pytest.mark.parametrize("folder, fragments", [
    ("no_processor", ["no image processor there", "processor.save_pretrained"]),
    ("no_weights", ["no weights there", "model.safetensors"]),
    ("no_tokenizer", ["no tokenizer files there"]),
    ("truncated", ["damaged or incomplete: copy them again"]),
    ("siglip", ["holds a siglip retriever", "--clip_model with --clip_backend transformers"]),
    ("gpt2", ["holds GPT2LMHeadModel, which reads no images", "AutoModelForImageTextToText"]),
])  # fmt: skip
def test_a_bad_model_folder_is_one_line_naming_the_problem_and_the_flag(folder, fragments, folders, tiny_run_args,
                                                                      tmp_path):  # fmt: skip
    run = tmp_path / "run"
    path = str(folders[folder])
    refused(train, tiny_run_args + ["--captioner", "hf", "--hf_model", path, "--checkpoint_dir", str(run)],
            path, "--hf_model", *fragments)  # fmt: skip
    assert not run.exists()
    refused(evaluate, ["--models", f"hf:{path}", "--output_dir", str(tmp_path / "out")], path, "--models",
            *fragments[:1])  # fmt: skip
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8), "red").save(image)  # something to caption, so that a damaged weight file is read
    refused(caption, [str(image), "--model", f"hf:{path}"], path, "--model", *fragments[:1])
    assert not (tmp_path / "out").exists()


def test_a_folder_without_its_config_is_one_line_too(folders, tiny_run_args, tmp_path):
    path = str(folders["no_config"])
    refused(train, tiny_run_args + ["--captioner", "hf", "--hf_model", path, "--checkpoint_dir", str(tmp_path / "r")],
            f"looked for: {os.path.abspath(path)} (a directory without config.json)", "pass a path with: --hf_model")  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_a_missing_folder_is_said_to_be_missing_not_an_invalid_hub_id(tmp_path):
    refused(evaluate, ["--models", "hf:/nonexistent", "--output_dir", str(tmp_path / "out")],
            "--models hf:/nonexistent: no such directory")  # fmt: skip


def test_an_unknown_lora_target_lists_the_linear_layers_there_are(folders, tiny_run_args, tmp_path):
    refused(train, tiny_run_args + ["--captioner", "hf", "--hf_model", str(folders["good"]), "--lora_rank", "2",
                                    "--lora_targets", "nonexistent_module", "--checkpoint_dir", str(tmp_path / "r")],
            "--lora_targets nonexistent_module", "language linear layers are named", "c_attn")  # fmt: skip
    assert not (tmp_path / "r").exists()


# ---- caption's exit status


def test_caption_exits_non_zero_when_it_captioned_nothing_and_tells_an_empty_folder_from_a_missing_one(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "egg.zoo.discriminative_captioner.caption", "--synthetic_world", "tiny"]
    (tmp_path / "notes.txt.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "captions.jsonl"
    done = subprocess.run(command + [str(tmp_path / "notes.txt.png"), "--output", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0 and not out.exists()
    assert done.stderr.strip().splitlines()[-1].startswith("error: captioned no image")
    done = subprocess.run(command + [str(tmp_path / "empty")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "a folder without image files" in done.stderr
    assert "no such image file" not in done.stderr


# ---- one feature cache per retriever


def test_switching_retrievers_never_rebuilds_a_cache_another_one_encoded(tiny_run_args, tmp_path, capsys):
    other = tmp_path / "other.pt"
    save_openai_clip(str(other), resolution=32)
    features = tmp_path / "features"
    args = tiny_run_args + ["--feature_cache_dir", str(features), "--validation_freq", "0", "--kl_coeff", "0"]
    train.main(args)  # the world's own retriever
    split = next(features.glob("synthetic-*"))
    manifests = {path: path.read_bytes() for path in split.glob("*/*/manifest.json")}
    train.main(args + ["--clip_model", str(other)])  # another one: caches of its own
    train.main(args)  # back to the world's: its caches as they were
    printed = capsys.readouterr().out
    assert "stale" not in printed and "rebuilding" not in printed
    assert all(path.read_bytes() == content for path, content in manifests.items())
    roles = {path.parent.name for path in split.glob("*/*/manifest.json")}
    assert "retriever" in roles and any(role.startswith("retriever-") for role in roles), roles
    assert json.loads(next(split.glob("*/retriever/manifest.json")).read_text())["key"]["model"] != str(other)


# ---- third-party warnings


def test_a_transformers_run_with_lora_and_checkpointing_prints_no_third_party_warning(folders, tiny_run_args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "egg.zoo.discriminative_captioner.train", *tiny_run_args, "--captioner", "hf",
               "--hf_model", str(folders["good"]), "--lora_rank", "2", "--gradient_checkpointing"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "it/s]" not in line and "s/it]" not in line]
    for word in ("Warning", "warn", "attention_mask", "attention mask", "fan_in_fan_out", "deprecated"):
        assert not any(word in line for line in lines), (word, lines)
