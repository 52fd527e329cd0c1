"""CLIP-S against torchmetrics' ``CLIPScore`` on a tiny transformers CLIP (scored through the project's transformers
retriever), RefCLIP-S against a float64 hand computation on hand-made vectors."""

import numpy as np
import pytest
import torch

from egg.zoo.discriminative_captioner.evaluation import clip_score
from egg.zoo.discriminative_captioner.evaluation.retrieval import encode_captions
from egg.zoo.discriminative_captioner.options.parse import get_opts
from egg.zoo.discriminative_captioner.retrievers import HFClipRetriever, build_retriever

CAPTIONS = ["a red circle on a dark background.", "two dogs playing in the water", "x", "a small pink square",
            "an illustration of a green triangle.", "digital art"]  # fmt: skip


def save_tiny_clip(directory, image_size=32, seed=0):
    """A randomly initialised transformers ``CLIPModel`` saved with a ``CLIPProcessor`` (CLIP's own BPE)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from egg.zoo.discriminative_captioner.retrievers.clip_conversion import clip_bpe_tokenizer

    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(directory)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})  # fmt: skip
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_bpe_tokenizer(32)).save_pretrained(directory)


class FeatureTensors(torch.nn.Module):
    """A CLIPModel whose ``get_*_features`` return the projected embedding itself: transformers 5 returns a model
    output holding it (``pooler_output``), torchmetrics 1.9 expects the tensor.  Nothing else changes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


def test_clip_s_agrees_with_torchmetrics_clip_score_under_the_transformers_retriever(tmp_path):
    from PIL import Image
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    save_tiny_clip(str(tmp_path / "clip"))
    retriever = build_retriever(get_opts(["--clip_backend", "transformers", "--clip_model", str(tmp_path / "clip")])
                                .with_model_defaults())  # fmt: skip
    assert isinstance(retriever, HFClipRetriever)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (len(CAPTIONS), 3, 32, 32), generator=generator, dtype=torch.uint8)  # [N, 3, H, W]
    images = retriever.encode_images(
        torch.stack([retriever.image_transform(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in pixels])
    )  # [N, D]
    texts = CAPTIONS  # as they are, as torchmetrics encodes them (the default: no --clip_score_prompt)
    ours = clip_score.clip_s(encode_captions(retriever, texts), images)  # [N]

    metric = CLIPScore(model_name_or_path=lambda: (FeatureTensors(CLIPModel.from_pretrained(str(tmp_path / "clip"))),
                                                   CLIPProcessor.from_pretrained(str(tmp_path / "clip"))))  # fmt: skip
    # torchmetrics clamps the mean of a batch at 0, not each pair: one pair per call gives each pair's 100 * max(cos, 0)
    theirs = torch.tensor([metric(pixels[i], texts[i]).item() for i in range(len(CAPTIONS))], dtype=torch.float64)
    assert (theirs == 0).any() and (theirs > 0).any()  # both sides of the clamp are exercised
    assert torch.allclose(ours, theirs * clip_score.WEIGHT / 100, rtol=0, atol=1e-4)
    scores = clip_score.caption_scores(retriever, images, {"model": CAPTIONS}, [[c] for c in CAPTIONS])
    assert scores["model"]["clip_s"] == pytest.approx(theirs.mean().item() * clip_score.WEIGHT / 100, abs=1e-4)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def hand_ref_clip_s(text, image, refs, w=2.5):
    """The paper's RefCLIP-S of one caption in numpy float64: H-mean(w * max(cos(c, v), 0), max(max_r cos(c, r), 0))."""
    c = w * max(float(unit(text) @ unit(image)), 0.0)
    r = max(max(float(unit(text) @ unit(ref)) for ref in refs), 0.0)
    return 0.0 if c + r == 0 else 2 * c * r / (c + r)


# caption 0: both sides positive, its best reference the second; caption 1: its image cosine negative (CLIP-S 0);
# caption 2: both sides negative; every vector unnormalised, so the normalisation inside is needed
TEXTS = [[3.0, 1.0, 0.0], [0.0, 2.0, 2.0], [-1.0, 0.0, 0.5]]
IMAGES = [[2.0, 2.0, 1.0], [0.5, -3.0, -1.0], [4.0, 0.1, -1.0]]
REFERENCES = [[[1.0, -1.0, 0.0], [2.0, 1.5, 0.2]], [[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0], [0.5, 0.5, -2.0]]]


def flat_references():
    flat = torch.tensor([r for refs in REFERENCES for r in refs])
    owners = torch.tensor([i for i, refs in enumerate(REFERENCES) for _ in refs])
    return flat, owners


def test_ref_clip_s_is_the_harmonic_mean_of_weighted_clip_s_and_the_best_reference_cosine():
    expected = [hand_ref_clip_s(t, v, refs) for t, v, refs in zip(TEXTS, IMAGES, REFERENCES)]
    assert expected[0] > 0 and expected[1] == 0 and expected[2] == 0
    flat, owners = flat_references()
    got = clip_score.ref_clip_s(torch.tensor(TEXTS).float(), torch.tensor(IMAGES).float(), flat.float(), owners)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-12)  # float32 inputs, float64 arithmetic
    clip_only = clip_score.clip_s(torch.tensor(TEXTS), torch.tensor(IMAGES)).numpy()
    np.testing.assert_allclose(clip_only, [2.5 * max(float(unit(t) @ unit(v)), 0) for t, v in zip(TEXTS, IMAGES)])


class StubRetriever:
    """Text embeddings looked up by caption (``prompt`` in front, as CLIP-S encodes them with one)."""

    def __init__(self, vectors, prompt=""):
        self.vectors = {(f"{prompt} {text}" if prompt else text): torch.tensor(v) for text, v in vectors.items()}

    def encode_texts(self, texts):
        return torch.stack([self.vectors[text] for text in texts])


def test_caption_scores_average_clip_s_over_all_images_and_ref_clip_s_over_the_described_ones():
    # image 3 has no reference: the model's CLIP-S counts it, its RefCLIP-S and the human CLIP-S do not
    images = torch.tensor(IMAGES + [[0.0, 0.0, 1.0]])
    references = [["r0", "r0b"], ["r1"], ["r2", "r2b"], []]
    vectors = {"m0": TEXTS[0], "m1": TEXTS[1], "m2": TEXTS[2], "m3": [1.0, 1.0, 1.0], "": [1.0, 0.0, 0.0]}
    vectors |= dict(zip(["r0", "r0b", "r1", "r2", "r2b"], [r for refs in REFERENCES for r in refs]))
    texts = {"model": ["m0", "m1", "m2", "m3"], "human": ["r0", "r1", "r2", ""]}
    scores = clip_score.caption_scores(StubRetriever(vectors), images, texts, references, human="human")
    prompted = clip_score.caption_scores(StubRetriever(vectors, clip_score.AUTHORS_PROMPT), images, texts, references,
                                         human="human", prompt=clip_score.AUTHORS_PROMPT)  # the stub's prompted keys
    assert prompted == scores

    model_clip_s = [2.5 * max(float(unit(vectors[c]) @ unit(v)), 0) for c, v in zip(texts["model"], images.tolist())]
    assert model_clip_s[3] > 0
    assert scores["model"]["clip_s"] == pytest.approx(np.mean(model_clip_s), rel=1e-6)
    refs = [hand_ref_clip_s(t, v, r) for t, v, r in zip(TEXTS, IMAGES, REFERENCES)]
    assert scores["model"]["ref_clip_s"] == pytest.approx(np.mean(refs), rel=1e-6)  # encode_captions: float32
    human = [2.5 * max(float(unit(vectors[c]) @ unit(v)), 0) for c, v in zip(texts["human"][:3], IMAGES)]
    assert scores["human"] == {"clip_s": pytest.approx(np.mean(human), rel=1e-6), "ref_clip_s": None}


def test_shape_mistakes_are_refused():
    flat, owners = flat_references()
    with pytest.raises(ValueError, match="one caption per image"):
        clip_score.clip_s(torch.ones(3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least one reference"):
        clip_score.ref_clip_s(torch.ones(4, 3), torch.ones(4, 3), flat, owners)
