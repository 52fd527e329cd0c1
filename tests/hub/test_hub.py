"""Model cards read back with huggingface_hub's own parser; exactly the loadable files uploaded; ``hf:REPO_ID`` giving
the run's own captions; every failure (offline, unfinished run, bad option) one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from egg.zoo.discriminative_captioner import caption, evaluate, train
from egg.zoo.discriminative_captioner.caption import add_caption_options
from egg.zoo.discriminative_captioner.evaluation.models import build_model, local_spec, parse_model
from egg.zoo.discriminative_captioner.hub import __main__ as push_command
from egg.zoo.discriminative_captioner.hub.card import model_card
from egg.zoo.discriminative_captioner.hub.layout import read_run
from egg.zoo.discriminative_captioner.options.parse import get_opts

from ..refusals import refused
from .conftest import tiny_args

CHECKPOINTS = {"final.tar", "1.tar", "final.resume.pt", "1.resume.pt", "log.jsonl", "final.json", "data_counts.json"}


def final_metrics(run):
    final = json.loads((run / "final.json").read_text())
    assert final["epoch"] == 1
    return {key: value for key, value in final.items() if key != "epoch"}


def card_metrics(card):
    return {result.metric_type: result.metric_value for result in card.data.eval_results}


def finetuned(run, kind):
    """Whether the run's captioner differs from the one it started from (so that equal captioners are the run's)."""
    options = json.loads((run / "opts.json").read_text())
    if kind == "clipcap":
        own, start = torch.load(run / "clipcap.pt"), torch.load(options["clipcap_checkpoint"])
    else:
        own, start = load_file(run / "hf" / "model.safetensors"), load_file(f"{options['hf_model']}/model.safetensors")
    return any(not torch.equal(value, start[key]) for key, value in own.items() if key in start)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    return str(tmp_path)


def test_a_clipcap_runs_card_holds_its_data_set_and_final_metrics_as_a_model_index(clipcap_run):
    card = ModelCard.load(clipcap_run / "README.md")
    assert card_metrics(card) == final_metrics(clipcap_run)  # the same floats, through YAML and back
    data = card.data
    assert data.datasets == ["synthetic"] and data.pipeline_tag == "image-to-text"
    assert data.model_name == "tiny-clipcap"  # the repository --push_to_hub named
    assert {result.dataset_split for result in data.eval_results} == {"test"}
    acc = next(result for result in data.eval_results if result.metric_type == "acc")
    assert acc.metric_name == "P@1 among 100 test images" and acc.dataset_config == "tiny"
    # a released or local ClipCap file is no Hub model: the card's text names it, its metadata does not
    started = json.loads((clipcap_run / "opts.json").read_text())["clipcap_checkpoint"]
    assert data.base_model is None and f"starting from `{started}`" in card.text
    assert "https://arxiv.org/abs/2304.01662" in card.text and "REINFORCE" in card.text
    assert "--model hf:me/tiny-clipcap" in card.text


def test_a_transformers_runs_card_is_also_in_its_folder_and_a_hub_base_is_its_base_model(hf_run):
    assert (hf_run / "hf" / "README.md").read_text() == (hf_run / "README.md").read_text()
    card = ModelCard.load(hf_run / "hf" / "README.md")
    assert card_metrics(card) == final_metrics(hf_run)
    assert card.data.library_name == "transformers" and card.data.datasets == ["synthetic"]
    assert card.data.base_model is None  # it started from a local folder
    assert f'AutoModelForImageTextToText.from_pretrained("{hf_run / "hf"}")' in card.text
    run = read_run(str(hf_run), "RUN")
    from_hub = run._replace(options={**run.options, "hf_model": "nlpconnect/vit-gpt2-image-captioning"})
    card = ModelCard(str(model_card(from_hub, "me/tiny-hf")))  # as the Hub would read it
    assert card.data.base_model == "nlpconnect/vit-gpt2-image-captioning"
    assert 'from_pretrained("me/tiny-hf")' in card.text and card_metrics(card) == final_metrics(hf_run)
    on_hub_data = run._replace(options={**run.options, "dataset": "hf", "hf_dataset": "me/captions"})
    card = ModelCard(str(model_card(on_hub_data)))
    assert card.data.datasets == ["me/captions"] and {r.dataset_type for r in card.data.eval_results} == {"me/captions"}


def test_train_pushes_exactly_the_clipcap_file_its_options_and_its_card(clipcap_run, hub):
    hub.api.create_repo.assert_any_call("me/tiny-clipcap", repo_type="model", private=None, exist_ok=True)
    uploads = [call for call in hub.api.upload_folder.call_args_list if call.kwargs["repo_id"] == "me/tiny-clipcap"]
    assert len(uploads) == 1 and uploads[0].kwargs["delete_patterns"] == "*"
    assert "me/tiny-clipcap" not in [call.args[0] for call in hub.api.update_repo_settings.call_args_list]
    assert hub.files("me/tiny-clipcap") == {"clipcap.pt", "opts.json", "README.md"}
    pushed = hub.root / "me/tiny-clipcap"
    assert (pushed / "clipcap.pt").read_bytes() == (clipcap_run / "clipcap.pt").read_bytes()
    assert card_metrics(ModelCard.load(pushed / "README.md")) == final_metrics(clipcap_run)
    assert not [name for name in os.listdir(clipcap_run) if name.startswith(".hub-upload")]  # staging removed


def test_the_push_command_uploads_a_transformers_folder_at_the_root(hf_run, hub, monkeypatch):
    hub.patch(monkeypatch)
    hub.api.update_repo_settings.reset_mock()
    url = push_command.main([str(hf_run), "me/tiny-hf", "--private"])
    assert url == "https://huggingface.co/me/tiny-hf"
    hub.api.create_repo.assert_any_call("me/tiny-hf", repo_type="model", private=True, exist_ok=True)
    hub.api.update_repo_settings.assert_called_once_with("me/tiny-hf", private=True)
    folder = set(os.listdir(hf_run / "hf"))
    assert "config.json" in folder and "model.safetensors" in folder
    assert hub.files("me/tiny-hf") == folder | {"opts.json", "README.md"}  # no checkpoint, no log
    assert not CHECKPOINTS & hub.files("me/tiny-hf")
    assert "--model hf:me/tiny-hf" in ModelCard.load(hub.root / "me/tiny-hf" / "README.md").text


@pytest.mark.parametrize("which, repo, kind", [("clipcap_run", "me/tiny-clipcap", "clipcap"),
                                               ("hf_run", "me/tiny-hf", "hf")])  # fmt: skip
def test_hf_repo_id_captions_as_the_run_directory_does(which, repo, kind, request, hub, images, world_cache,
                                                       monkeypatch, capsys):  # fmt: skip
    run = request.getfixturevalue(which)
    if not (hub.root / repo).exists():
        hub.patch(monkeypatch)
        push_command.main([str(run), repo])
    hub.patch(monkeypatch)
    spec = local_spec(parse_model(f"hf:{repo}", flag="--model"))
    assert hub.downloads[-1] == repo
    assert (spec.kind, spec.options) == (kind, str(hub.root / repo / "opts.json"))  # the pushed run, with its options
    args = tiny_args(world_cache)[:4] + ["--max_len", "6", "--num_beams", "2", images]
    from_hub = caption.main(args + ["--model", f"hf:{repo}"])
    from_run = caption.main(args + ["--model", str(run)])
    assert len(from_hub) == 3 and [r["caption"] for r in from_hub] == [r["caption"] for r in from_run]
    opts = get_opts(args, extra_options=add_caption_options, command="caption")
    loaded = build_model(opts, parse_model(f"hf:{repo}", flag="--model")).state_dict()
    own = build_model(opts, parse_model(str(run), flag="--model")).state_dict()
    assert loaded.keys() == own.keys() and all(torch.equal(loaded[key], own[key]) for key in own)
    assert finetuned(run, kind)  # and not those it started from


def test_a_repo_neither_downloadable_nor_cached_is_one_line_naming_the_local_flag(images, world_cache):
    args = tiny_args(world_cache)[:4] + [images]
    refused(lambda: caption.main(args + ["--model", "hf:me/not-cached"]), "--model hf:me/not-cached",
            "cannot download me/not-cached", "not in the local Hugging Face cache", "--model hf:DIR")  # fmt: skip


def test_offline_push_and_unfinished_runs_are_one_line(clipcap_run, tmp_path):
    refused(lambda: push_command.main([str(clipcap_run), "me/offline"]), "me/offline", "creating the repository",
            "HF_HUB_OFFLINE is set", "push it later with: python -m egg.zoo.discriminative_captioner.hub")  # fmt: skip
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("opts.json", "clipcap.pt"):
        (unfinished / name).write_bytes((clipcap_run / name).read_bytes())
    refused(lambda: push_command.main([str(unfinished), "me/x"]), "has not finished (no final.json yet)")
    refused(lambda: push_command.main([str(tmp_path), "me/x"]), "not a run directory (no opts.json")
    refused(lambda: push_command.main([str(clipcap_run), "me/bad id"]), "REPO_ID me/bad id: not a Hub repository id")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "egg.zoo.discriminative_captioner.hub", str(clipcap_run),
                           "me/offline"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("error: cannot push")


def test_push_options_are_refused_where_they_cannot_apply(world_cache, tmp_path):
    args = tiny_args(world_cache)
    refused(lambda: train.main(args + ["--checkpoint_dir", "", "--push_to_hub", "me/x"]),
            "--push_to_hub uploads the finetuned captioner", "--checkpoint_dir")  # fmt: skip
    refused(lambda: train.main(args + ["--checkpoint_dir", str(tmp_path / "r"), "--hub_private"]),
            "--hub_private", "give --push_to_hub REPO_ID")  # fmt: skip
    refused(lambda: train.main(args + ["--checkpoint_dir", str(tmp_path / "r"), "--push_to_hub", "a/b/c"]),
            "--push_to_hub a/b/c: not a Hub repository id")  # fmt: skip
    refused(lambda: evaluate.main(["--push_to_hub", "me/x"]), "evaluate does not use --push_to_hub")
    assert not (tmp_path / "r").exists()
