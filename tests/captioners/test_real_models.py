"""The real captioners and retrievers, loaded from tiny files in their real on-disk formats, through the same
code paths a user's files take."""

import json
import os
import shutil

import pytest
import torch

from egg.zoo.discriminative_captioner import train
from egg.zoo.discriminative_captioner.captioners import build_captioner
from egg.zoo.discriminative_captioner.captioners.blip import BlipCaptioner
from egg.zoo.discriminative_captioner.captioners.clipcap_checkpoint import is_legacy_buffer
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.retrievers import build_retriever
from egg.zoo.discriminative_captioner.retrievers.clip_conversion import save_as_transformers
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..tiny_models import blip_opts, clipcap_opts, options


def one_training_step(captioner, sender_input):
    optimizer = torch.optim.Adam(captioner.trainable_parameters(), lr=1e-3)
    rollout = captioner.rollout(sender_input)
    (-rollout.log_prob.mean()).backward()
    optimizer.step()
    return rollout


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_released_clipcap_files_load_strictly_and_round_trip(tiny_files, kind, tmp_path):
    released = torch.load(tiny_files[f"clipcap_{kind}"], weights_only=True)
    captioner = build_captioner(clipcap_opts(tiny_files, kind))
    assert captioner.config.mapping_type == kind and captioner.config.prefix_length == 3
    assert captioner.config.normalize_prefix == (kind == "transformer")  # as the released models were trained
    for key, value in captioner.model.state_dict().items():
        assert torch.equal(value, released[key]), key

    features = captioner.encode_images(torch.randn(4, 3, 32, 32))
    one_training_step(captioner, features)
    written = torch.load(captioner.save_pretrained(str(tmp_path)), weights_only=True)
    assert written.keys() == released.keys()  # the released layout, legacy buffers included
    for key, value in written.items():
        expected = released[key] if is_legacy_buffer(key) else captioner.model.state_dict()[key]
        assert torch.equal(value, expected), key

    reloaded = build_captioner(clipcap_opts(tiny_files, kind, "--clipcap_checkpoint", str(tmp_path / "clipcap.pt")))
    assert reloaded.generate(features, num_beams=2).text == captioner.generate(features, num_beams=2).text


def test_clipcap_files_that_do_not_fit_are_rejected_with_the_offending_keys(tiny_files, tmp_path):
    with pytest.raises(UsageError, match="--mapping_type mlp but .* holds a transformer mapper"):
        build_captioner(clipcap_opts(tiny_files, "transformer", "--mapping_type", "mlp"))
    state = torch.load(tiny_files["clipcap_mlp"], weights_only=True)
    state["gpt.transformer.h.0.attn.extra"] = torch.zeros(1)
    del state["gpt.transformer.ln_f.bias"]
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(UsageError, match=r"missing keys: gpt\.transformer\.ln_f\.bias; unexpected keys: gpt\."):
        build_captioner(clipcap_opts(tiny_files, "mlp", "--clipcap_checkpoint", str(broken)))
    other_clip = tmp_path / "clip64.pt"
    from ..tiny_models import save_openai_clip

    save_openai_clip(other_clip, embed_dim=64)  # 64-d features for a mapper trained on 32-d ones
    with pytest.raises(UsageError, match=r"shape mismatches: clip_project\.model\.0\.weight"):
        build_captioner(clipcap_opts(tiny_files, "mlp", "--captioner_clip_model", str(other_clip)))


def test_blip_loads_trains_only_its_decoder_and_saves_a_transformers_directory(tiny_files, tmp_path):
    captioner = build_captioner(blip_opts(tiny_files))
    assert isinstance(captioner, BlipCaptioner) and not captioner.cache_inputs
    vision = list(captioner.vision.parameters())
    assert vision and not any(p.requires_grad for p in vision)
    assert {id(p) for p in captioner.trainable_parameters()} == {id(p) for p in captioner.text_decoder.parameters()}

    pixels = torch.stack([captioner.image_transform(image) for image in random_images(4)])
    assert pixels.shape == (4, 3, 32, 32)
    rollout = captioner.rollout(pixels)
    assert torch.allclose(rollout.log_prob, captioner.score(pixels, rollout.message)[0], atol=1e-4)
    one_training_step(captioner, pixels)
    assert all(not text.startswith("a picture of") for text in captioner.generate(pixels, num_beams=2).text)

    saved = captioner.save_pretrained(str(tmp_path))
    reloaded = build_captioner(blip_opts(tiny_files, "--blip_model", saved))
    for key, value in captioner.text_decoder.state_dict().items():
        assert torch.equal(reloaded.text_decoder.state_dict()[key], value), key

    trainable_vision = build_captioner(blip_opts(tiny_files, "--blip_train_vision"))
    assert all(p.requires_grad for p in trainable_vision.vision.parameters())


def test_a_blip_directory_that_does_not_fit_is_rejected(tiny_files, tmp_path):
    broken = tmp_path / "blip"
    shutil.copytree(tiny_files["blip"], broken)
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 2  # the weights hold one layer
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="does not match BlipForConditionalGeneration.*missing_keys"):
        build_captioner(blip_opts(tiny_files, "--blip_model", str(broken)))


def random_images(n, size=40):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    arrays = torch.randint(0, 256, (n, size, size, 3), generator=generator, dtype=torch.uint8).numpy()
    return [Image.fromarray(array) for array in arrays]


def test_both_clip_backends_give_the_same_scores_for_the_same_weights(tiny_files, tmp_path):
    converted = tmp_path / "clip_transformers"
    save_as_transformers(torch.load(tiny_files["clip"], weights_only=True), str(converted))
    openai = build_retriever(options(["--clip_model", tiny_files["clip"]]))
    hf = build_retriever(options(["--clip_backend", "transformers", "--clip_model", str(converted)]))
    assert openai.temperature == pytest.approx(hf.temperature) == pytest.approx(0.01, rel=1e-4)

    pixels = torch.stack([openai.image_transform(image) for image in random_images(5)])
    texts = ["a red circle.", "digital art selected for the #", "two dogs playing in the water", "x",
             "a very long caption " * 10]  # fmt: skip
    scores = openai.encode_texts(texts) @ openai.encode_images(pixels).T
    other = hf.encode_texts(texts) @ hf.encode_images(pixels).T
    assert torch.allclose(scores, other, rtol=1e-4, atol=1e-6), (scores - other).abs().max()


def test_missing_weights_name_the_file_and_the_flag(tiny_files, tmp_path):
    cases = [
        (["--clip_model", "ViT-B/32", "--clip_download_root", str(tmp_path)], "ViT-B-32.pt.*--clip_model"),
        (["--clip_backend", "transformers"], "openai/clip-vit-base-patch32.*--clip_model"),
        (["--clip_model", str(tmp_path / "missing.pt")], "missing.pt.*--clip_model"),
    ]
    for extra, message in cases:
        with pytest.raises(UsageError, match=message):
            build_retriever(options(extra))
    with pytest.raises(UsageError, match="'gpt2'.*--language_model"):
        build_captioner(clipcap_opts(tiny_files, "mlp", "--language_model", "gpt2"))
    with pytest.raises(UsageError, match="Salesforce/blip-image-captioning-base.*--blip_model"):
        build_captioner(options(["--captioner", "blip"]))
    with pytest.raises(UsageError, match="needs --clipcap_checkpoint PATH: coco_weights.pt"):
        build_captioner(options(["--clip_model", tiny_files["clip"]]))


@pytest.mark.parametrize("backend", ["openai", "transformers"])
@pytest.mark.parametrize("captioner", ["clipcap", "blip"])
def test_one_epoch_with_each_captioner_and_retriever_backend(captioner, backend, tiny_files, tiny_run_args, capsys):
    extra = ["--clip_backend", backend]
    if captioner == "blip":
        extra += ["--captioner", "blip", "--blip_model", tiny_files["blip"], "--kl_coeff", "0.1"]
    results = train.main(tiny_run_args + extra)
    modes = [json.loads(line)["mode"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert modes == ["test", "train", "test", "final"] and 0 <= results["acc"] <= 1


def test_help_lists_every_model_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        get_opts(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [("--blip_model", "Salesforce/blip-image-captioning-base"), ("--clip_backend", "openai"),
                            ("--mapping_type", "auto"), ("--blip_prompt", "a picture of"),
                            ("--retriever_precision", "fp32"),
                            ("--language_model", "gpt2, or the synthetic world's")]:  # fmt: skip
        assert option in text and f"(default: {default})" in text, option
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
