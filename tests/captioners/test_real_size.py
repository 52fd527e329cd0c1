"""The paper's models at their real sizes (random weights): each builds and takes one training step at batch 4.

GPT-2 small with ClipCap's MLP mapper over ViT-B/32 features, BLIP base (ViT-B/16 at 384 px, BERT-base
decoder), and CLIP ViT-B/32 in both backends.  Marked ``slow`` (about a minute on two CPU cores); deselect with
``-m "not slow"``.
"""

import pytest
import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    GPT2Config,
    GPT2LMHeadModel,
)

from egg.zoo.discriminative_captioner.archs import CaptionerSender, DiscriminativeGame, RetrieverReceiver
from egg.zoo.discriminative_captioner.captioners.blip import BlipCaptioner
from egg.zoo.discriminative_captioner.captioners.clipcap import (
    ClipCapCaptioner,
    ClipCapConfig,
    ClipCapModel,
    ClipImageEncoder,
)
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.retrievers.clip_conversion import clip_bpe_tokenizer
from egg.zoo.discriminative_captioner.retrievers.hf_clip import HFClipRetriever
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip, clip_transform

from ..tiny_models import gpt2_tokenizer

pytestmark = pytest.mark.slow


def vit_b32():
    """OpenAI CLIP ViT-B/32's architecture (what clip.load('ViT-B/32') builds), randomly initialised."""
    torch.manual_seed(0)
    return clip.model.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).eval()


def training_step(captioner, retriever, sender_input, pixels):
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever), DiscriminationLoss())
    optimizer = torch.optim.Adam(captioner.trainable_parameters(), lr=1e-7)
    game.train()
    before = [p.detach().clone() for p in captioner.trainable_parameters()]
    loss, interaction = game(sender_input, torch.arange(4), retriever.encode_images(pixels))
    loss.backward()
    optimizer.step()
    assert interaction.aux["acc"].shape == (4,)
    assert any(not torch.equal(b, p) for b, p in zip(before, captioner.trainable_parameters()))


def test_clipcap_gpt2_small_with_openai_clip_vit_b32():
    tokenizer = gpt2_tokenizer()  # GPT-2's vocabulary files are not available offline; the sizes are GPT-2's
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config())  # GPT-2 small: 12 layers, width 768, 50257 tokens
    model = ClipCapModel(ClipCapConfig(prefix_length=10, prefix_size=512), gpt)
    assert model.clip_project.model[0].weight.shape == (3840, 512)
    assert model.clip_project.model[2].weight.shape == (7680, 3840)
    clip_model = vit_b32()
    captioner = ClipCapCaptioner(model, tokenizer, ClipImageEncoder(clip_model, clip_transform(224)), max_len=10)
    retriever = ClipRetriever(vit_b32(), clip_transform(224))
    pixels = torch.randn(4, 3, 224, 224)
    training_step(captioner, retriever, captioner.encode_images(pixels), pixels)


def test_blip_base_with_transformers_clip_vit_b32():
    torch.manual_seed(0)
    blip = BlipForConditionalGeneration(BlipConfig())  # BLIP base: ViT-B/16 at 384 px, BERT-base decoder
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(30517)] + ["[DEC]", "[ENC]"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)})
    processor = BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer)
    captioner = BlipCaptioner(blip, processor, prompt="w1 w2 w3", max_len=10)
    hf_clip = CLIPModel(
        CLIPConfig(text_config={"hidden_act": "quick_gelu"}, vision_config={"hidden_act": "quick_gelu"})
    )
    retriever = HFClipRetriever(hf_clip.eval(), clip_bpe_tokenizer(77), CLIPImageProcessor())
    training_step(captioner, retriever, torch.randn(4, 3, 384, 384), torch.randn(4, 3, 224, 224))
