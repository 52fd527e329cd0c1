"""Image splits, their encoding by the frozen encoders, and the EGG batches the game consumes.

A batch is EGG's ``(sender_input, labels, receiver_input, aux_input)``:

- ``sender_input``: the captioner's inputs (for ClipCap, CLIP image features)          ``[B, ...]``
- ``labels``: the index of each target among the batch's candidates, ``arange(B)``      ``[B]``
  (in a distributed run, among the global batch's: ``rank * B + arange(B)``)
- ``receiver_input``: the candidates' retriever image embeddings                       ``[B, D]``
- ``aux_input``: ``{"image_index": [B]}``, each image's index in its split

Every image of a batch is a target and the other B - 1 are its distractors, as in the paper.
"""

import functools
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import UsageError
from .samplers import EpochBatchSampler


@dataclass
class ImageSplit:
    """One split of a data set: images (PIL images, by index), their reference captions and their ids."""

    name: str
    images: Sequence  # images[i] -> PIL.Image
    references: List[List[str]]
    ids: Optional[List[str]] = None  # the data set's own image ids (file names, COCO ids); default: "<index>"

    def __post_init__(self):
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.references))]
        if len(self.ids) != len(self.references):
            raise ValueError(f"split '{self.name}': {len(self.ids)} ids for {len(self.references)} images")

    def __len__(self):
        return len(self.references)


@torch.no_grad()
def encode_images(split, transform, encoder, batch_size=256, device="cpu", desc=None):
    """Runs a frozen ``encoder`` over the split's images, ``transform`` first; returns ``[N, ...]`` on the CPU."""
    outputs = []
    for start in tqdm(range(0, len(split), batch_size), desc=desc or f"encoding {split.name}", leave=False):
        end = min(start + batch_size, len(split))
        pixels = torch.stack([transform(split.images[i]) for i in range(start, end)]).to(device)
        outputs.append(encoder(pixels).cpu())
    return torch.cat(outputs)


class TransformedImages:
    """A split's images as pixel tensors, transformed when read (for captioners whose inputs are not cached)."""

    def __init__(self, images, transform):
        self.images = images
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return torch.stack([self.transform(self.images[i]) for i in range(*index.indices(len(self)))])
        return self.transform(self.images[index])


class EncodedSplit(Dataset):
    """A split with its images encoded for the captioner (sender) and the retriever (receiver).

    ``sender_inputs`` and ``receiver_inputs`` are indexable by image (and by slice): tensors computed once, or
    ``TransformedImages`` computed when read.
    """

    def __init__(self, split, sender_inputs, receiver_inputs):
        if not len(split) == len(sender_inputs) == len(receiver_inputs):
            raise ValueError("a split's references, sender inputs and receiver inputs must have one row per image")
        self.split = split
        self.sender_inputs = sender_inputs
        self.receiver_inputs = receiver_inputs

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        return self.sender_inputs[index], self.receiver_inputs[index], index


def collate_game_batch(items, label_offset=0):
    """Stacks ``(sender_input, receiver_input, index)`` items into EGG's four-part batch with in-batch targets.

    ``label_offset``: where these items start among the candidates (a rank's share of a global batch).
    """
    sender_inputs, receiver_inputs, indices = zip(*items)
    labels = label_offset + torch.arange(len(items))  # [B]: image i is the target of caption i
    aux_input = {"image_index": torch.tensor(indices)}
    return torch.stack(sender_inputs), labels, torch.stack(receiver_inputs), aux_input


def check_batch_size(batch_size):
    """In-batch distractors need at least two images per batch."""
    if batch_size < 2:
        raise UsageError(
            f"--batch_size {batch_size} leaves no distractors: a batch of B images gives each target B - 1"
        )


def training_loader(dataset, batch_size, seed, num_workers=0, rank=0, world_size=1):
    """Shuffled batches of ``batch_size`` (each image a target, the rest of the batch its distractors).

    The order comes from ``loader.batch_sampler`` (an ``EpochBatchSampler``): call its ``set_epoch`` before each
    epoch (``callbacks.EpochSetter`` does).  With ``world_size`` ranks, ``batch_size`` is the global batch.
    """
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, rank=rank, world_size=world_size)
    collate = functools.partial(collate_game_batch, label_offset=rank * (batch_size // world_size))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


def retrieval_loader(dataset, candidates, seed, rank=0, world_size=1):
    """The paper's retrieval protocol: each target among ``candidates - 1`` random (seeded) distractors.

    The split is shuffled once with ``seed`` and cut into batches of ``candidates``; a remainder smaller than
    a full batch is left out, so the logged ``acc`` is exactly P@1 among ``candidates``.  With ``world_size``
    ranks, each yields its contiguous share of every batch.
    """
    if candidates % world_size:
        raise UsageError(f"--eval_candidates {candidates} must be divisible by the number of processes {world_size}")
    if candidates < 2:
        raise UsageError(f"retrieval needs at least 2 candidates, got {candidates}")
    if len(dataset) < candidates:
        raise UsageError(f"split '{dataset.split.name}' has {len(dataset)} images, fewer than {candidates} candidates")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[start : start + candidates] for start in range(0, len(order) - candidates + 1, candidates)]
    share = candidates // world_size
    batches = [batch[rank * share : (rank + 1) * share] for batch in batches]  # this rank's part of each
    collate = functools.partial(collate_game_batch, label_offset=rank * share)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
