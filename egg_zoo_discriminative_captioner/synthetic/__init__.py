"""The built-in synthetic world (``--dataset synthetic``): a miniature of the paper's setting, built offline.

``build_world`` draws the images and their captions (``world.py``), pretrains the stand-ins for CLIP, GPT-2
and ClipCap-ConCap (``pretrain.py``) and writes everything in the real on-disk formats into a cache directory:

    world.npz          images, reference captions (alt-text and descriptive) and scene codes per split
    retriever.pt       the tiny CLIP, an OpenAI-CLIP state dict (loads with ``--clip_model PATH``)
    retriever_transformers/  the same CLIP as a transformers directory (``--clip_backend transformers``)
    language_model/    the tiny GPT-2 with its tokenizer, a transformers directory (``--language_model DIR``)
    captioner.pt       the tiny ClipCap-ConCap, a ClipCap state dict (``--clipcap_checkpoint PATH``)
    manifest.json      configs and file checksums, written last
    hf_captioner/      a ViT + GPT-2 VisionEncoderDecoderModel (``--captioner hf``), built on first use only
                       (``pretrain_hf.py``; not in the manifest)

The method code never imports this package: the data registry maps ``--dataset synthetic`` to
``load_dataset``, which hands over the images, the alt-text references and the model files above.
"""

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data.splits import ImageSplit
from ..retrievers.clip_conversion import save_as_transformers
from ..runtime.checkpointing import atomic_directory
from ..runtime.downloads import default_cache_dir
from ..runtime.errors import UsageError
from . import world as W
from .pretrain import PretrainConfig, to_pixels, train_captioner, train_language_model, train_retriever, word_tokenizer

FORMAT_VERSION = 2
SPLITS = ("train", "validation", "test")

PRESETS = {
    "default": (W.WorldConfig(), PretrainConfig()),
    # For tests and quick trials: about half a minute to build on 2 CPU cores, small but not degenerate.  Its
    # retriever spreads the test images (mean pairwise cosine about 0.4, so nearest-neighbour hard sets exist
    # under the default --near_duplicate_cosine) and tells colours, sizes and backgrounds apart, not yet shapes;
    # human and pretrained P@1 are a few times chance, and one epoch of DiscriTune already raises the latter.
    # Short schedules want lower peak learning rates than the default's (3e-3 leaves this retriever collapsed)
    # and a stronger captioner learning rate, so that its colour words are grounded enough for RL to amplify.
    "tiny": (
        W.WorldConfig(n_train=600, n_validation=200, n_test=500),
        PretrainConfig(
            retriever_steps=500,
            retriever_batch=64,
            retriever_lr=1e-3,
            lm_steps=50,
            lm_batch=32,
            captioner_steps=700,
            captioner_batch=32,
            captioner_lr=3e-3,
        ),
    ),
}


def world_directory(cache_dir, preset):
    """Where a preset's world lives: its name plus a hash of everything that decides its contents."""
    world_config, pretrain_config = PRESETS[preset]
    key = json.dumps([FORMAT_VERSION, dataclasses.asdict(world_config), dataclasses.asdict(pretrain_config)])
    return os.path.join(cache_dir, f"synthetic-{preset}-{hashlib.sha256(key.encode()).hexdigest()[:10]}")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory):
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            if name != "manifest.json":
                path = os.path.join(root, name)
                yield os.path.relpath(path, directory), path


def build_world(directory, world_config, pretrain_config, progress=True):
    """Draws the world and pretrains its models into ``directory`` (built aside, then renamed into place)."""
    started = time.time()
    with atomic_directory(directory) as staging:
        with torch.random.fork_rng():  # pretraining seeds torch itself; leave the caller's RNG as it was
            _build_into(staging, world_config, pretrain_config, progress)
        manifest = {
            "format_version": FORMAT_VERSION,
            "world": dataclasses.asdict(world_config),
            "pretrain": dataclasses.asdict(pretrain_config),
            "build_seconds": round(time.time() - started, 1),
            "files": {name: _sha256(path) for name, path in _files(staging)},
        }
        with open(os.path.join(staging, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)


def _build_into(directory, world_config, cfg, progress):
    rng = np.random.default_rng(world_config.seed)
    sizes = {"train": world_config.n_train, "validation": world_config.n_validation, "test": world_config.n_test}
    arrays, train_scenes, train_images = {}, None, None
    for split in SPLITS:
        scenes = W.sample_scenes(rng, sizes[split], world_config.p_two_objects)
        images = W.render(scenes, world_config.image_size, rng)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_alt_text"] = np.array([W.alt_text(scenes, i, rng)[0] for i in range(len(scenes))])
        arrays[f"{split}_descriptive"] = np.array([W.describe(scenes, i, rng)[0] for i in range(len(scenes))])
        for field in dataclasses.fields(scenes):
            arrays[f"{split}_scene_{field.name}"] = getattr(scenes, field.name)
        if split == "train":
            train_scenes, train_images = scenes, images
    np.savez_compressed(os.path.join(directory, "world.npz"), **arrays)

    seed = world_config.seed
    retriever = train_retriever(train_images, train_scenes, cfg, seed + 1, progress)
    torch.save(retriever.state_dict(), os.path.join(directory, "retriever.pt"))
    save_as_transformers(retriever.state_dict(), os.path.join(directory, "retriever_transformers"))

    tokenizer = word_tokenizer()
    language_model = train_language_model(tokenizer, cfg, seed + 2, progress)
    lm_directory = os.path.join(directory, "language_model")
    language_model.save_pretrained(lm_directory)
    tokenizer.save_pretrained(lm_directory)

    with torch.no_grad():
        features = retriever.encode_image(to_pixels(train_images)).float()  # ClipCap's raw CLIP features
    references = list(arrays["train_alt_text"])
    captioner = train_captioner(features, references, language_model, tokenizer, None, cfg, seed + 3, progress)
    torch.save(captioner.model.state_dict(), os.path.join(directory, "captioner.pt"))


def check_world(directory):
    """Raises a UsageError unless ``directory`` holds a complete, uncorrupted world."""
    hint = "rerun with --rebuild to build it again"
    try:
        with open(os.path.join(directory, "manifest.json")) as f:
            manifest = json.load(f)
        expected = manifest["files"]
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"synthetic world cache {directory} is incomplete or corrupted ({error}); {hint}") from None
    found = dict(_files(directory))
    for name, digest in expected.items():
        if name not in found or _sha256(found[name]) != digest:
            raise UsageError(f"synthetic world cache {directory}: {name} is missing or corrupted; {hint}")
    return manifest


class ArrayImages:
    """uint8 images ``[N, H, W, 3]`` served as PIL images, the form real data sets give."""

    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        return Image.fromarray(self.array[index])


@dataclass
class SyntheticDataset:
    """The world as a data set: image splits with alt-text references, plus its pretrained model files."""

    directory: str
    arrays: dict
    manifest: dict

    @property
    def root(self):
        """Where the world was read from: its feature caches are named after it."""
        return self.directory

    def cache_split(self, name):
        """Each split has images of its own."""
        return name

    def split(self, name):
        """The ``train``, ``validation`` or ``test`` split, with the alt-text captions as references."""
        references = [[str(text)] for text in self.arrays[f"{name}_alt_text"]]
        return ImageSplit(name, ArrayImages(self.arrays[f"{name}_images"]), references)

    def descriptive_references(self, name):
        """Plain, complete descriptions of the split's images (the world's 'descriptive' caption style)."""
        return [[str(text)] for text in self.arrays[f"{name}_descriptive"]]

    def scenes(self, name):
        """The split's ground-truth scene codes, for analysis only (the method never sees them)."""
        fields = [field.name for field in dataclasses.fields(W.Scenes)]
        return W.Scenes(*(self.arrays[f"{name}_scene_{field}"] for field in fields))

    def model_defaults(self, opts):
        """Option values that point the captioner and retriever options at the world's pretrained files.

        With ``--captioner hf`` and no ``--hf_model``, the world's ViT + GPT-2 captioner (``hf_captioner/``),
        pretrained into the cache on first use (``pretrain_hf.py``).
        """
        retriever = os.path.join(self.directory, "retriever.pt")
        converted = os.path.join(self.directory, "retriever_transformers")
        defaults = {
            "clip_model": converted if opts.clip_backend == "transformers" else retriever,
            "captioner_clip_model": retriever,
            "clipcap_checkpoint": os.path.join(self.directory, "captioner.pt"),
            "language_model": os.path.join(self.directory, "language_model"),
        }
        if opts.captioner == "hf" and not opts.hf_model:
            from .pretrain_hf import ensure_hf_captioner

            defaults["hf_model"] = ensure_hf_captioner(self)
        return defaults


def load_world(cache_dir=None, preset="default", rebuild=False, progress=True):
    """The preset's world from the cache, built first if it is missing (or if ``rebuild``)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown synthetic world preset {preset!r}; choose one of {sorted(PRESETS)}")
    directory = world_directory(cache_dir or default_cache_dir(), preset)
    if rebuild or not os.path.exists(directory):
        print(f"building the synthetic world ({preset}) in {directory}", flush=True)
        build_world(directory, *PRESETS[preset], progress=progress)
    manifest = check_world(directory)
    try:
        with np.load(os.path.join(directory, "world.npz")) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {directory}/world.npz ({error}); rerun with --rebuild") from None
    return SyntheticDataset(directory, arrays, manifest)


def load_dataset(opts):
    """Registry entry for ``--dataset synthetic``."""
    return load_world(opts.cache_dir, opts.synthetic_world, opts.rebuild)


# The second domain: the same kinds of scenes drawn with other image statistics (a noisier, unevenly lit,
# duller-coloured camera, more scenes with two objects), and described by people, COCO-style, with several plain
# descriptions per image.  Nothing is trained on it: it exists to test the world's captioners 0-shot across domains
# (the paper's Tables 1 and 3), against descriptive references where the main world's are alt-text.
DESCRIPTIVE_STYLE = W.RenderStyle(tint=14.0, noise=12.0, gradient=50.0, saturation=0.85)
DESCRIPTIVE_P_TWO_OBJECTS = 0.6
DESCRIPTIVE_REFERENCES = 5
DESCRIPTIVE_SEED_OFFSET = 1000  # the domain's generator is its own: the main world's images are untouched


@dataclass
class DescriptiveDomain:
    """``--dataset synthetic_descriptive``: the world's second domain, drawn on load (a second or two), with the
    main world's pretrained models as its own."""

    world: SyntheticDataset

    @property
    def root(self):
        """The main world's directory: the domain is drawn from its configuration."""
        return self.world.directory

    def cache_split(self, name):
        """Each split is a draw of its own."""
        return name

    def split(self, name):
        """The split's images in the second domain's style, with five descriptive references each."""
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; choose one of {SPLITS}")
        config = self.world_config
        size = {"train": config.n_validation, "validation": config.n_validation, "test": config.n_test}[name]
        rng = np.random.default_rng([config.seed + DESCRIPTIVE_SEED_OFFSET, SPLITS.index(name)])
        scenes = W.sample_scenes(rng, size, DESCRIPTIVE_P_TWO_OBJECTS)
        images = W.render(scenes, config.image_size, rng, DESCRIPTIVE_STYLE)
        references = [
            [W.describe(scenes, i, rng)[0] for _ in range(DESCRIPTIVE_REFERENCES)] for i in range(len(scenes))
        ]
        return ImageSplit(name, ArrayImages(images), references, ids=[f"{name}-d{i}" for i in range(size)])

    @property
    def world_config(self):
        return W.WorldConfig(**self.world.manifest["world"])

    def model_defaults(self, opts):
        """The main world's pretrained models."""
        return self.world.model_defaults(opts)


def load_descriptive_dataset(opts):
    """Registry entry for ``--dataset synthetic_descriptive`` (builds the main world first if needed)."""
    return DescriptiveDomain(load_dataset(opts))
