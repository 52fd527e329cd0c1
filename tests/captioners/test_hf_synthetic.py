"""``--captioner hf`` on the synthetic world: its ViT + GPT-2 captioner (``synthetic/pretrain_hf.py``), pretrained
briefly on the tiny world, then finetuned through the real ``train`` entry point, and the world's own one filling
``--hf_model`` when it is left unset."""

import json
import os
import shutil

import pytest
import torch

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.captioners import base
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.runtime.errors import UsageError
from egg.zoo.discriminative_captioner.synthetic import load_world, pretrain_hf, world_directory


@pytest.fixture
def own_world_cache(world_cache, tmp_path):
    """A copy of the tiny world's cache, so that what these tests add to the world stays out of the session's."""
    cache = tmp_path / "cache"
    source = world_directory(world_cache, "tiny")
    shutil.copytree(source, cache / os.path.basename(source))
    return str(cache)


def run_args(cache):
    return ["--synthetic_world", "tiny", "--cache_dir", cache, "--n_epochs", "1", "--batch_size", "50",
            "--max_len", "6", "--num_beams", "2", "--captioner", "hf"]  # fmt: skip


def test_a_pretrained_world_captioner_finetunes_end_to_end_and_saves_a_transformers_directory(
    own_world_cache, tmp_path, capsys
):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    from egg.zoo.discriminative_captioner.captioners.hf import HFCaptioner
    from egg.zoo.discriminative_captioner.captioners.hf_loading import load_hf_captioner

    pretrained = str(tmp_path / "ved")
    pretrain_hf.main(["--preset", "tiny", "--cache_dir", own_world_cache, "--output_dir", pretrained,
                      "--steps", "30", "--no_progress"])  # fmt: skip
    assert AutoModelForImageTextToText.from_pretrained(pretrained).config.model_type == "vision-encoder-decoder"
    assert AutoTokenizer.from_pretrained(pretrained).tokenize("a red circle") == ["a", "red", "circle"]
    # the encoder is the world's CLIP image tower, frozen while the decoder learned, with its image processor
    from transformers import CLIPVisionModel

    from egg.zoo.discriminative_captioner.synthetic import load_world

    world = load_world(own_world_cache, "tiny", progress=False)
    clip_directory = os.path.join(world.directory, "retriever_transformers")
    tower = CLIPVisionModel.from_pretrained(clip_directory).state_dict()
    encoder = AutoModelForImageTextToText.from_pretrained(pretrained).encoder.state_dict()
    assert tower.keys() == encoder.keys() and all(torch.equal(tower[key], encoder[key]) for key in tower)
    assert AutoImageProcessor.from_pretrained(pretrained).to_dict() == AutoImageProcessor.from_pretrained(
        clip_directory).to_dict()  # fmt: skip
    settings = json.loads((tmp_path / "ved" / pretrain_hf.SETTINGS_FILE).read_text())
    assert settings["config"]["steps"] == 30 and settings["final_loss"] > 0

    run = tmp_path / "run"
    capsys.readouterr()
    results = train.main(run_args(own_world_cache) + ["--hf_model", pretrained, "--checkpoint_dir", str(run)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(line["mode"], line["epoch"]) for line in lines] == [("test", 0), ("train", 1), ("test", 1), ("final", 1)]
    assert 0 <= results["acc"] <= 1
    assert {"hf", "final.json", "final.tar", "log.jsonl", "opts.json"} <= set(os.listdir(run))
    assert json.loads((run / "final.json").read_text())["acc"] == pytest.approx(results["acc"])
    assert len((run / "log.jsonl").read_text().splitlines()) == len(lines)
    saved = json.loads((run / "opts.json").read_text())
    assert saved["captioner"] == "hf" and saved["hf_model"] == pretrained

    finetuned = str(run / "hf")
    assert type(AutoModelForImageTextToText.from_pretrained(finetuned)).__name__ == "VisionEncoderDecoderModel"
    opts = get_opts(run_args(own_world_cache) + ["--hf_model", finetuned, "--checkpoint_dir", ""])
    captioner = load_hf_captioner(opts)
    assert isinstance(captioner, HFCaptioner)
    image = load_world(own_world_cache, "tiny", progress=False).split("test").images[0]
    captions = captioner.generate(captioner.image_transform(image)[None], num_beams=2)
    tokens = captions.message
    texts = captioner.decode(tokens, base.caption_mask(tokens, captioner.stop_ids))
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_without_hf_model_the_world_pretrains_its_own_into_its_directory(own_world_cache, monkeypatch):
    from egg.zoo.discriminative_captioner.captioners.hf import HFCaptioner
    from egg.zoo.discriminative_captioner.experiment import build_experiment

    full = pretrain_hf.config_for
    monkeypatch.setattr(pretrain_hf, "config_for", lambda world, **overrides: full(world, **{"steps": 10, **overrides}))
    experiment = build_experiment(get_opts(run_args(own_world_cache) + ["--checkpoint_dir", ""]))
    opts = experiment.config  # with the world's own models
    world = load_world(own_world_cache, "tiny", progress=False)
    assert opts.hf_model == os.path.join(world.directory, pretrain_hf.HF_DIRECTORY)
    assert isinstance(experiment.captioner, HFCaptioner)
    built = os.stat(os.path.join(opts.hf_model, "model.safetensors")).st_mtime_ns
    assert pretrain_hf.ensure_hf_captioner(world, progress=False) == opts.hf_model  # built once, then reused
    assert os.stat(os.path.join(opts.hf_model, "model.safetensors")).st_mtime_ns == built


def test_other_data_sets_still_need_hf_model():
    with pytest.raises(UsageError, match="--captioner hf needs --hf_model"):
        get_opts(["--dataset", "coco", "--captioner", "hf"])
