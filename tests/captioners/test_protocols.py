"""Every registered captioner, retriever, KL reference and data set offers what its Protocol says
(``captioners.base.Captioner``, ``retrievers.base.Retriever``, ``kl_references.KLReference``,
``data.base.Dataset``), checked on tiny instances built from configs."""

import pytest
from transformers import BlipProcessor, SiglipImageProcessor

from egg.zoo.discriminative_captioner.captioners.base import Captioner
from egg.zoo.discriminative_captioner.captioners.blip import BlipCaptioner
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipImageEncoder
from egg.zoo.discriminative_captioner.captioners.hf import HFCaptioner
from egg.zoo.discriminative_captioner.captioners.hf_loading import load_model, load_processor
from egg.zoo.discriminative_captioner.data.base import Dataset
from egg.zoo.discriminative_captioner.data.files import RealDataset, evaluation_only
from egg.zoo.discriminative_captioner.data.splits import ImageSplit
from egg.zoo.discriminative_captioner.kl_references import FrozenReference, KLReference, LanguageModelReference
from egg.zoo.discriminative_captioner.retrievers.base import Retriever
from egg.zoo.discriminative_captioner.retrievers.hf_clip import HFClipRetriever
from egg.zoo.discriminative_captioner.retrievers.open_clip import OpenClipRetriever
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform
from egg.zoo.discriminative_captioner.synthetic import DescriptiveDomain, SyntheticDataset

from ..tiny_hf_captioners import save_vit_gpt2
from ..tiny_models import (
    TINY_OPEN_CLIP,
    register_tiny_open_clip,
    save_blip,
    save_siglip,
    siglip_tokenizer,
    tiny_clip,
    tiny_gpt2,
    tiny_open_clip,
)


def test_every_captioner_offers_the_captioner_protocol(clipcap, retriever, tmp_path):
    clipcap.image_encoder = ClipImageEncoder(tiny_clip(), clip_transform(32))  # the fixture's has none
    blip = BlipCaptioner(save_blip(str(tmp_path / "blip")), BlipProcessor.from_pretrained(tmp_path / "blip"))
    directory = str(tmp_path / "vit_gpt2")
    save_vit_gpt2(directory)
    hf = HFCaptioner(load_model(directory, "--hf_model"), load_processor(directory, "--hf_model"), max_len=6)
    for captioner in (clipcap, blip, hf):
        assert isinstance(captioner, Captioner), type(captioner).__name__
        assert captioner.ban is None  # no image placeholders: every token may be drawn
    assert not isinstance(retriever, Captioner)  # the check looks at the members, not at nn.Module


def test_every_retriever_offers_the_retriever_protocol(retriever, tmp_path):
    import open_clip

    register_tiny_open_clip(str(tmp_path))
    open_clip_retriever = OpenClipRetriever(tiny_open_clip(), open_clip.get_tokenizer(TINY_OPEN_CLIP),
                                            open_clip.image_transform(32, is_train=False))  # fmt: skip
    siglip = HFClipRetriever(save_siglip(str(tmp_path / "siglip")), siglip_tokenizer(),
                             SiglipImageProcessor(size={"height": 32, "width": 32}))  # fmt: skip
    for each in (retriever, open_clip_retriever, siglip):
        assert isinstance(each, Retriever), type(each).__name__
        assert each.encode_texts(["a red circle"]).shape[0] == 1


def test_every_kl_reference_offers_the_kl_reference_protocol(clipcap, tokenizer):
    language_model = LanguageModelReference(tiny_gpt2(len(tokenizer)), tokenizer.eos_token_id, clipcap.stop_ids)
    for reference in (FrozenReference(clipcap), language_model):
        assert isinstance(reference, KLReference), type(reference).__name__
    assert not isinstance(clipcap, KLReference)


def test_real_data_sets_offer_the_data_set_protocol(tmp_path):
    def read():
        return ImageSplit("test", [], [])

    for dataset in (RealDataset("tiny", str(tmp_path), {"train": read, "test": read}),
                    evaluation_only("tiny", str(tmp_path), read)):  # fmt: skip
        assert isinstance(dataset, Dataset)
        assert dataset.root == str(tmp_path)
    assert evaluation_only("tiny", str(tmp_path), read).cache_split("validation") == "test"


@pytest.mark.parametrize("kind", ["synthetic", "synthetic_descriptive"])
def test_the_synthetic_data_sets_offer_the_data_set_protocol(kind, tmp_path):
    world = SyntheticDataset(str(tmp_path), arrays={}, manifest={})
    dataset = world if kind == "synthetic" else DescriptiveDomain(world)
    assert isinstance(dataset, Dataset)
    assert dataset.root == str(tmp_path) and dataset.cache_split("validation") == "validation"
