"""Shared fixtures: tiny models built from configs, and the tiny synthetic world built once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup must fail fast, never retry for a minute
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from egg.zoo.discriminative_captioner.captioners.clipcap import (  # noqa: E402
    ClipCapCaptioner,
    ClipCapConfig,
    ClipCapModel,
)
from egg.zoo.discriminative_captioner.clip_models import clip, clip_transform  # noqa: E402
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever  # noqa: E402
from egg.zoo.discriminative_captioner.synthetic.pretrain import word_tokenizer  # noqa: E402


def tiny_clip(seed=0, embed_dim=32):
    """A randomly initialised OpenAI-CLIP architecture small enough for a unit test."""
    torch.manual_seed(seed)
    return clip.model.CLIP(
        embed_dim=embed_dim,
        image_resolution=32,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=16,
        context_length=16,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    ).eval()


def tiny_gpt2(vocab_size, seed=0):
    """A randomly initialised GPT-2 architecture (2 layers, width 32)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def tokenizer():
    return word_tokenizer()


@pytest.fixture
def clipcap(tokenizer):
    """A tiny ClipCap captioner (random weights) over 32-d features, without an image encoder."""
    model = ClipCapModel(ClipCapConfig(prefix_length=3, prefix_size=32), tiny_gpt2(len(tokenizer)))
    return ClipCapCaptioner(model, tokenizer, image_encoder=None, max_len=8)


@pytest.fixture
def retriever():
    return ClipRetriever(tiny_clip(), clip_transform(32))


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory):
    """A cache directory holding the tiny synthetic world (built once for the whole session)."""
    from egg.zoo.discriminative_captioner.synthetic import load_world

    cache = str(tmp_path_factory.mktemp("cache"))
    load_world(cache, "tiny", progress=False)
    return cache


@pytest.fixture
def tiny_run_args(world_cache):
    """Command-line options for a fast run on the tiny synthetic world."""
    return ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--n_epochs", "1", "--batch_size", "50",
            "--max_len", "6", "--num_beams", "2", "--checkpoint_dir", ""]  # fmt: skip
