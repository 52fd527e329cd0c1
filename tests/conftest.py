"""The fixtures every test folder shares: tiny models built from configs, tiny transformers captioners saved on
first use, and the tiny synthetic world built once per session."""

import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup must fail fast, never retry for a minute
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from egg.zoo.discriminative_captioner.captioners.clipcap import (  # noqa: E402
    ClipCapCaptioner,
    ClipCapConfig,
    ClipCapModel,
)
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever  # noqa: E402
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip_transform  # noqa: E402
from egg.zoo.discriminative_captioner.synthetic.pretrain import word_tokenizer  # noqa: E402

from .tiny_hf_captioners import BUILDERS  # noqa: E402
from .tiny_models import model_files, tiny_clip, tiny_gpt2  # noqa: E402


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


@pytest.fixture
def tiny_world_args(world_cache):
    """The tiny synthetic world's options for ``evaluate`` and ``caption`` (which refuse training options)."""
    return ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--max_len", "6", "--num_beams", "2"]


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    """Tiny CLIP, GPT-2, ClipCap (both mappers) and BLIP files in their real on-disk formats."""
    return model_files(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny transformers captioner family's directory (built on first use in a module) and what its builder
    (``tiny_hf_captioners.BUILDERS``) says of it."""
    built = {}

    def get(family):
        if family not in built:
            directory = str(tmp_path_factory.mktemp(family))
            built[family] = BUILDERS[family](directory)
        return built[family]

    return get


@pytest.fixture
def free_port():
    """A TCP port that was free a moment ago, for a torch.distributed rendezvous on this machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
