"""What one call of a trainer's reward function holds, in the game's terms: caption texts, the call's distinct
images (the candidates) and each caption's target among them.

A trainer lays out each prompt's completions one after another and hands every completion its own copy of the
prompt's image, decoded afresh from the data set, so images are told apart by their pixels, not by the objects
that carry them: an image's several completions share one target and never meet each other as distractors, as
an image's K rollouts do in the game.
"""

import hashlib
import io
from typing import List, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from ..runtime.errors import UsageError

# What fixes a call with a single image, in TRL's terms: the call holds one process's share of a generation batch.
BATCH_OPTIONS = (
    "each call holds one process's per_device_train_batch_size x steps_per_generation completions "
    "(generation_batch_size / processes; per_device_eval_batch_size in evaluation), num_generations per image: "
    "make that at least 2 x num_generations (raise per_device_train_batch_size, steps_per_generation or "
    "generation_batch_size, or lower num_generations)"
)


class Call(NamedTuple):
    """One reward call: ``texts`` [N], the distinct ``images`` [C] in order of first appearance, ``targets`` [N]
    (long: each caption's image among them) and ``keys`` [C] (the images' pixel digests)."""

    texts: List[str]
    images: List[Image.Image]
    targets: torch.Tensor
    keys: List[str]


def completion_text(completion):
    """A completion as text: a string (standard data sets), or the last message of a conversation, whose content
    is a string or a list of parts (conversational data sets: ``[{"role": "assistant", "content": ...}]``)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return "".join(texts)
    raise UsageError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def as_image(value):
    """A PIL image in RGB from what a data set's image column holds: a PIL image, an array ``[H, W, 3]`` (uint8),
    a file path, or the ``{"bytes": ..., "path": ...}`` of an undecoded ``datasets.Image`` feature."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, np.ndarray):
        return Image.fromarray(value).convert("RGB")
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        return Image.open(source).convert("RGB")
    if isinstance(value, str):
        return Image.open(value).convert("RGB")
    raise UsageError(f"cannot read an image from a {type(value).__name__}: give PIL images, uint8 arrays, file "
                     "paths or datasets.Image values")  # fmt: skip


def pixel_key(image):
    """The digest of an image's size and RGB pixels: equal for two decodings of one image, different otherwise."""
    digest = hashlib.blake2b(f"{image.size}".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.hexdigest()


def images_of(kwargs, column):
    """Each completion's image from the call's data set columns: ``column`` ("image"), else the "images" column
    with one image per prompt."""
    if column in kwargs and kwargs[column] is not None:
        return list(kwargs[column])
    if column == "image" and kwargs.get("images") is not None:
        images = []
        for row in kwargs["images"]:
            if not isinstance(row, (list, tuple)) or len(row) != 1:
                count = len(row) if isinstance(row, (list, tuple)) else "no list of"
                raise UsageError(f"the reward captions one image per prompt; a row of the 'images' column holds "
                                 f"{count} images")  # fmt: skip
            images.append(row[0])
        return images
    given = sorted(key for key in kwargs if key not in ("trainer_state", "log_extra", "log_metric", "environments"))
    raise UsageError(f"the reward reads each completion's image from the data set's {column!r} column (or 'images', "
                     f"one image per prompt); this call's columns: {', '.join(given) or 'none'}")  # fmt: skip


def read_call(completions: Sequence, images: Sequence, min_images=2) -> Call:
    """The call's texts, distinct images and targets; fewer than ``min_images`` distinct images is a UsageError
    that names the batch options giving each call more images."""
    if len(images) != len(completions):
        raise UsageError(f"{len(completions)} completions but {len(images)} images: one image per completion")
    texts = [completion_text(completion) for completion in completions]
    distinct, keys, targets = [], {}, []
    for value in images:
        image = as_image(value)
        key = pixel_key(image)
        if key not in keys:
            keys[key] = len(distinct)
            distinct.append(image)
        targets.append(keys[key])
    if len(distinct) < min_images:
        raise UsageError(f"the discriminative reward scores each caption against the call's other images, but this "
                         f"call's {len(texts)} completions show {len(distinct)} distinct image"
                         f"{'' if len(distinct) == 1 else 's'}, fewer than {min_images}: {BATCH_OPTIONS}")  # fmt: skip
    return Call(texts, distinct, torch.tensor(targets, dtype=torch.long), list(keys))
