"""The open_clip and transformers (CLIP, SigLIP) retrievers, loaded offline from tiny files in their real on-disk
formats through ``build_retriever``, checked against each library's own computation, and in the game's reward."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from egg.zoo.discriminative_captioner.games import build_game
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.retrievers import HFClipRetriever, OpenClipRetriever, build_retriever
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..tiny_models import register_tiny_open_clip, save_open_clip, save_open_clip_directory, save_siglip

TEXTS = ["a red circle on a dark background.", "two dogs playing in the water", "x", "a very long caption " * 30]


def options(params):
    """Options as a run resolves them (command line, then the released models' defaults)."""
    return get_opts(params).with_model_defaults()


def random_images(n, size=40):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    arrays = torch.randint(0, 256, (n, size, size, 3), generator=generator, dtype=torch.uint8).numpy()
    return [Image.fromarray(array) for array in arrays]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A registered tiny open_clip architecture with a checkpoint file, a local-dir: copy, and a SigLIP."""
    root = tmp_path_factory.mktemp("retrievers")
    name = register_tiny_open_clip(str(root))
    save_open_clip(str(root / "open_clip.pt"), name)
    save_open_clip_directory(str(root / "open_clip_dir"))
    save_siglip(str(root / "siglip"))
    return {"name": name, "checkpoint": str(root / "open_clip.pt"), "directory": str(root / "open_clip_dir"),
            "siglip": str(root / "siglip")}  # fmt: skip


def open_clip_args(files):
    return ["--clip_backend", "open_clip", "--clip_model", files["name"], "--clip_pretrained", files["checkpoint"]]


def siglip_args(files):
    return ["--clip_backend", "transformers", "--clip_model", files["siglip"]]


def assert_frozen(retriever):
    retriever.train()
    assert not retriever.training and not any(p.requires_grad for p in retriever.parameters())


def test_open_clip_checkpoint_file_loads_offline_and_encodes_as_open_clip_does(files):
    import open_clip

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    retriever = build_retriever(options(open_clip_args(files)))
    assert isinstance(retriever, OpenClipRetriever)
    assert_frozen(retriever)
    assert retriever.temperature == pytest.approx(0.01, rel=1e-4) and retriever.context_length == 16
    saved = torch.load(files["checkpoint"], weights_only=True)
    assert all(torch.equal(value, saved[key]) for key, value in retriever.model.state_dict().items())

    # the library's own loading, tokenizer and preprocessing
    model, _, preprocess = open_clip.create_model_and_transforms(files["name"], pretrained=files["checkpoint"])
    tokens = open_clip.get_tokenizer(files["name"])(TEXTS)
    assert tokens.shape == (len(TEXTS), 16)  # the long caption truncated to the model's context
    images = random_images(3)
    pixels = torch.stack([retriever.image_transform(image) for image in images])
    assert torch.equal(pixels, torch.stack([preprocess(image) for image in images]))
    with torch.no_grad():
        texts = F.normalize(model.eval().encode_text(tokens), dim=-1)
        image_embeddings = F.normalize(model.encode_image(pixels), dim=-1)
    assert torch.allclose(retriever.encode_texts(TEXTS), texts, atol=1e-6)
    assert torch.allclose(retriever.encode_images(pixels), image_embeddings, atol=1e-6)
    assert retriever.encode_texts(TEXTS).dtype == torch.float32


def test_open_clip_local_directory_brings_its_weights_and_preprocessing(files):
    import open_clip

    retriever = build_retriever(
        options(["--clip_backend", "open_clip", "--clip_model", f"local-dir:{files['directory']}"])
    )
    assert tuple(retriever.image_transform.transforms[-1].mean) == (0.5, 0.5, 0.5)  # the directory's, not OpenAI's
    saved = torch.load(os.path.join(files["directory"], "open_clip_pytorch_model.bin"), weights_only=True)
    assert all(torch.equal(value, saved[key]) for key, value in retriever.model.state_dict().items())
    with pytest.raises(UsageError, match="brings its own weights: leave --clip_pretrained unset"):
        build_retriever(options(["--clip_backend", "open_clip", "--clip_model", f"local-dir:{files['directory']}",
                                 "--clip_pretrained", files["checkpoint"]]))  # fmt: skip
    # a checkpoint file carries no preprocessing: the one all of the model's tags share applies
    from egg.zoo.discriminative_captioner.retrievers.open_clip import _shared_preprocessing

    siglip = _shared_preprocessing(open_clip, "ViT-B-16-SigLIP")
    assert siglip["mean"] == (0.5, 0.5, 0.5) and siglip["resize_mode"] == "squash"
    assert "mean" not in _shared_preprocessing(open_clip, files["name"])  # no tags: open_clip's defaults


NEEDS_PRETRAINED = "--clip_backend open_clip needs --clip_pretrained: a local checkpoint file, or one of the tags"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--clip_pretrained", "MISSING/weights.pt"], r"--clip_pretrained MISSING/weights.pt: no such file"),
        (["--clip_pretrained", "nosuchtag"], r"'nosuchtag' is neither a file nor a tag of open_clip ViT-B-32 \(tags: "
                                             r"openai, .*laion2b_s34b_b79k"),
        ([], NEEDS_PRETRAINED + " of ViT-B-32: openai, "),
        (["--clip_model", "ViT-B/99", "--clip_pretrained", "openai"], r"--clip_model 'ViT-B/99' is not an open_clip "
                                                                       r"model name; did you mean ViT-B-"),
    ],
)  # fmt: skip
def test_open_clip_options_that_name_nothing_say_which_flag_to_fix(extra, message):
    with pytest.raises(UsageError, match=message):
        build_retriever(options(["--clip_backend", "open_clip", *extra]))


def test_open_clip_tag_that_cannot_download_names_the_tag_and_the_flag_for_a_local_file(tmp_path, files):
    params = ["--clip_backend", "open_clip", "--clip_pretrained", "laion2b_s34b_b79k",
              "--clip_download_root", str(tmp_path)]  # fmt: skip
    with pytest.raises(UsageError, match=r"'laion2b_s34b_b79k'.*pass its local path with --clip_pretrained") as error:
        build_retriever(options(params))
    assert "\n" not in str(error.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(
        UsageError,
        match=r"garbage.pt \(--clip_pretrained\) does not load into open_clip .*: it is a "
        r"text file, not an open_clip state dict",
    ):
        build_retriever(options(["--clip_backend", "open_clip", "--clip_model", files["name"],
                                 "--clip_pretrained", str(garbage)]))  # fmt: skip
    state = torch.load(files["checkpoint"], weights_only=True)
    del state["ln_final.bias"]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(UsageError, match=r"other.pt \(--clip_pretrained\) does not load into .*Missing key.*ln_final"):
        build_retriever(options(["--clip_backend", "open_clip", "--clip_model", files["name"],
                                 "--clip_pretrained", str(tmp_path / "other.pt")]))  # fmt: skip


def test_siglip_loads_offline_pads_to_64_tokens_and_its_bias_cancels_in_the_softmax(files):
    from transformers import AutoTokenizer, SiglipModel

    retriever = build_retriever(options(siglip_args(files)))
    assert isinstance(retriever, HFClipRetriever)
    assert_frozen(retriever)
    assert retriever.temperature == pytest.approx(0.1, rel=1e-4) and retriever.logit_bias == pytest.approx(-10.0)

    tokens = retriever.tokenize(TEXTS)
    assert list(tokens) == ["input_ids"]  # as SigLIP was trained: no attention mask, pad = </s> is pooled
    assert tokens["input_ids"].shape == (len(TEXTS), 64)
    expected = AutoTokenizer.from_pretrained(files["siglip"])(TEXTS, padding="max_length", max_length=64,
                                                              truncation=True, return_tensors="pt")  # fmt: skip
    assert torch.equal(tokens["input_ids"], expected["input_ids"])
    assert (tokens["input_ids"][0, 8:] == 1).all() and (tokens["input_ids"][:, -1] == 1).all()  # padded with </s>

    pixels = torch.stack([retriever.image_transform(image) for image in random_images(3)])
    assert pixels.shape == (3, 3, 32, 32)
    model = SiglipModel.from_pretrained(files["siglip"]).eval()
    with torch.no_grad():
        logits = model(input_ids=tokens["input_ids"], pixel_values=pixels).logits_per_text  # [T, I], bias included
    scores = retriever.encode_texts(TEXTS) @ retriever.encode_images(pixels).T  # [T, I] cosines
    assert torch.allclose(logits, scores / retriever.temperature + retriever.logit_bias, atol=1e-5)
    assert torch.allclose(logits.softmax(dim=1), (scores / retriever.temperature).softmax(dim=1), atol=1e-6)


def test_transformers_clip_still_pads_to_the_longest_caption_with_its_mask_and_matches_the_openai_backend(tmp_path):
    from egg.zoo.discriminative_captioner.retrievers.clip_conversion import save_as_transformers

    from ..tiny_models import save_openai_clip

    save_openai_clip(str(tmp_path / "clip.pt"))
    save_as_transformers(torch.load(tmp_path / "clip.pt", weights_only=True), str(tmp_path / "clip"))
    openai = build_retriever(options(["--clip_model", str(tmp_path / "clip.pt")]))
    hf = build_retriever(options(["--clip_backend", "transformers", "--clip_model", str(tmp_path / "clip")]))
    assert isinstance(hf, HFClipRetriever) and hf.logit_bias is None
    tokens = hf.tokenize(["a red circle.", "x"])
    assert list(tokens) == ["input_ids", "attention_mask"] and tokens["input_ids"].shape[1] < 16
    assert hf.tokenize(TEXTS)["input_ids"].shape == (len(TEXTS), 16)  # the long caption truncated to the context
    pixels = torch.stack([openai.image_transform(image) for image in random_images(3)])
    scores = openai.encode_texts(TEXTS) @ openai.encode_images(pixels).T
    assert torch.allclose(scores, hf.encode_texts(TEXTS) @ hf.encode_images(pixels).T, rtol=1e-4, atol=1e-6)


def test_transformers_backend_takes_dual_encoders_only_and_names_the_flag(tmp_path):
    from transformers import GPT2Config, Siglip2Config

    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")
    Siglip2Config().save_pretrained(tmp_path / "naflex")
    cases = [
        (tmp_path / "gpt2", r"is a gpt2 model; --clip_backend transformers takes CLIPModel, SiglipModel"),
        (tmp_path / "naflex", r"NaFlex SigLIP 2 .*use a fixed-resolution SigLIP 2 checkpoint"),
        (tmp_path / "missing", r"missing.*--clip_model"),
    ]
    for source, message in cases:
        with pytest.raises(UsageError, match=message):
            build_retriever(options(["--clip_backend", "transformers", "--clip_model", str(source)]))


@pytest.mark.parametrize("backend", ["open_clip", "siglip"])
def test_the_game_rewards_captions_with_each_retriever(backend, files, clipcap):
    params = open_clip_args(files) if backend == "open_clip" else siglip_args(files)
    opts = options([*params, "--num_beams", "2"])
    retriever = build_retriever(opts)
    game = build_game(opts, clipcap, retriever)
    pixels = torch.stack([retriever.image_transform(image) for image in random_images(4)])  # the candidates
    features, labels = torch.randn(4, 32), torch.arange(4)
    scored = []
    game.receiver.register_forward_hook(lambda module, inputs, output: scored.append(output))
    for training in (True, False):
        game.train(training)
        loss, interaction = game(features, labels, pixels)
        assert torch.isfinite(loss)
        cosines = scored[-1]  # [B, N], what the receiver handed the loss
        assert cosines.shape == (4, 4) and cosines.abs().max() <= 1 + 1e-5
        expected = torch.log_softmax(cosines / retriever.temperature, dim=1)[labels, labels]  # the retriever's own T
        assert torch.allclose(interaction.aux["reward"], expected, atol=1e-5)
    game.train()
    game(features, labels, pixels)[0].backward()
    assert all(p.grad is None for p in retriever.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in clipcap.trainable_parameters())
    assert math.isclose(game.loss.temperature, retriever.temperature)
