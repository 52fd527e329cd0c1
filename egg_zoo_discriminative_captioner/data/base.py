"""What a data set offers (``Dataset``), its splits' encoding by the frozen encoders, and the EGG batches the game
consumes.

A batch is EGG's ``(sender_input, labels, receiver_input, aux_input)``:

- ``sender_input``: the captioner's inputs (for ClipCap, CLIP image features)          ``[B, ...]``
- ``labels``: the index of each target among the batch's candidates, ``arange(B)``      ``[B]``
  (in a distributed run, among the global batch's: ``rank * B + arange(B)``)
- ``receiver_input``: the candidates' retriever image embeddings                       ``[B, D]``
- ``aux_input``: ``{"image_index": [B]}``, each image's index in its split; with hard distractors
  (``hard_distractors.py``) also each target's k nearest neighbours, ``neighbour_images`` ``[B, k, D]`` and
  ``neighbour_index`` ``[B, k]``

Every image of a training batch is a target and the other B - 1 are its distractors, as in the paper.  An
evaluation batch is one candidate set of the retrieval protocol (``retrieval_loader``).
"""

import functools
from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from ..runtime.errors import UsageError
from .samplers import EpochBatchSampler
from .splits import ImageSplit


@runtime_checkable
class Dataset(Protocol):
    """A loaded data set (``--dataset``): what the run, its feature cache and ``data_scripts/check_data.py`` read."""

    root: str  # where it was read from: names its feature cache, and refusals say where its images are missing

    def split(self, name: str) -> ImageSplit: ...  # "train", "validation" or "test"
    # the split whose images (and feature cache) split ``name`` uses: itself, or the one it shares its images with
    def cache_split(self, name: str) -> str: ...
    # option values for the models that belong with the data set (only the built-in synthetic world has any)
    def model_defaults(self, opts) -> dict: ...


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


class EncodedSplit(TorchDataset):
    """A split with its images encoded for the captioner (sender) and the retriever (receiver).

    ``sender_inputs`` and ``receiver_inputs`` are indexable by image (and by slice): tensors computed once, or
    ``TransformedImages`` computed when read.  ``other_receiver_inputs``: other retrievers' embeddings of the same
    images (``experiment.encode_split``), none by default.
    """

    def __init__(self, split, sender_inputs, receiver_inputs):
        if not len(split) == len(sender_inputs) == len(receiver_inputs):
            raise ValueError("a split's references, sender inputs and receiver inputs must have one row per image")
        self.split = split
        self.sender_inputs = sender_inputs
        self.receiver_inputs = receiver_inputs
        self.other_receiver_inputs = []

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


def training_loader(dataset, batch_size, seed, num_workers=0, rank=0, world_size=1):
    """Shuffled batches of ``batch_size`` (each image a target, the rest of the batch its distractors).

    The order comes from ``loader.batch_sampler`` (an ``EpochBatchSampler``): call its ``set_epoch`` before each
    epoch (``callbacks.EpochSetter`` does).  The loader has a generator of its own, so starting an epoch draws
    nothing from the global random state (which a resumed run restores at the epoch's first remaining batch).
    With ``world_size`` ranks, ``batch_size`` is the global batch.
    """
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, rank=rank, world_size=world_size)
    return sampled_loader(dataset, sampler, seed, num_workers)


def sampled_loader(dataset, sampler, seed, num_workers=0, collate=collate_game_batch):
    """A DataLoader of game batches from an ``EpochBatchSampler``; labels index the sampler's global batch.
    ``collate(items, label_offset)`` makes the batch (``collate_game_batch``, or one that adds to its aux_input)."""
    offset = sampler.rank * (sampler.batch_size // sampler.world_size)  # this rank's first target in the global batch
    collate = functools.partial(collate, label_offset=offset)
    generator = torch.Generator().manual_seed(seed)  # seeds workers only; the order is the sampler's
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      generator=generator)  # fmt: skip


def retrieval_batches(n_images, candidates, seed):
    """The candidate sets of the paper's retrieval protocol: a list of ``(targets, fillers)`` index lists.

    The split is shuffled once with ``seed`` and cut into sets of ``candidates`` images, each image the target of
    its own caption with the other ``candidates - 1`` of its set as distractors.  Every image is scored: when
    ``n_images`` is not a multiple of ``candidates``, the last ``n_images mod candidates`` images form a set of
    their own, completed by ``fillers`` drawn (same generator) from the rest of the split; fillers are distractors
    only, never targets, and no image is ever its own distractor.
    """
    if candidates < 2:
        raise UsageError(f"retrieval needs at least 2 candidates, got {candidates}")
    if n_images < candidates:
        raise UsageError(f"a split of {n_images} images cannot give each target {candidates} candidates: pass "
                         f"--eval_candidates {n_images} or fewer")  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_images, generator=generator).tolist()
    full = n_images - n_images % candidates
    batches = [(order[start : start + candidates], []) for start in range(0, full, candidates)]
    if full < n_images:
        remainder, rest = order[full:], order[:full]
        picks = torch.randperm(len(rest), generator=generator)[: candidates - len(remainder)].tolist()
        batches.append((remainder, [rest[i] for i in picks]))
    return batches


def retrieval_share(n_targets, rank=0, world_size=1):
    """This rank's rows of a candidate set with ``n_targets`` targets: ``(positions, padding)``, two lists.

    Each rank takes a contiguous part of ceil(n_targets / world_size) target positions, so the ranks' parts in rank
    order are the set's targets in order.  Parts that come up short are filled with copies of the first target,
    flagged in ``padding``: every rank then captions as many rows, so their results can be all-gathered, and the
    flagged rows are dropped.  One process takes every target, without padding.
    """
    share = -(-n_targets // world_size)  # ceil
    positions = list(range(rank * share, min((rank + 1) * share, n_targets)))
    n_padding = share - len(positions)
    return positions + [0] * n_padding, [False] * len(positions) + [True] * n_padding


class _RetrievalSets(TorchDataset):
    """Candidate set -> this rank's EGG batch of it: its share of the targets, all the candidates.

    ``sender_input`` ``[k, ...]`` and ``labels`` ``[k]`` cover the targets this rank captions;
    ``receiver_input`` ``[C, D]`` all C candidates, targets first, then the fillers, which are candidates only.
    In a distributed run ``aux_input["padding"]`` ``[k]`` flags the rows that only even out the ranks' shares.
    """

    def __init__(self, dataset, sets, rank, world_size):
        self.dataset = dataset
        self.sets = sets
        self.rank = rank
        self.world_size = world_size

    def __len__(self):
        return len(self.sets)

    def __getitem__(self, index):
        targets, fillers = self.sets[index]
        positions, padding = retrieval_share(len(targets), self.rank, self.world_size)
        captioned = [targets[p] for p in positions]
        sender_inputs = torch.stack([self.dataset.sender_inputs[i] for i in captioned])  # [k, ...]
        labels = torch.tensor(positions)  # [k]: target p is candidate p
        receiver_inputs = torch.stack([self.dataset.receiver_inputs[i] for i in targets + fillers])  # [C, D]
        aux_input = {"image_index": torch.tensor(captioned)}
        if self.world_size > 1:
            aux_input["padding"] = torch.tensor(padding)
        return sender_inputs, labels, receiver_inputs, aux_input


def retrieval_loader(dataset, candidates, seed, rank=0, world_size=1):
    """The paper's retrieval protocol as EGG batches: each target among ``candidates - 1`` seeded distractors.

    The candidate sets are ``retrieval_batches(len(dataset), candidates, seed)``, one batch each; every image of the
    split is the target exactly once, so the mean logged ``acc`` is P@1 among ``candidates`` over the whole split.
    With ``world_size`` ranks, each batch holds this rank's share of the set's targets (``retrieval_share``) and all
    its candidates; the game gathers the shares back into the whole set (``DiscriminativeGame``).
    """
    if len(dataset) < candidates:
        raise UsageError(f"split '{dataset.split.name}' has {len(dataset)} images, fewer than {candidates} candidates")
    sets = retrieval_batches(len(dataset), candidates, seed)
    return DataLoader(_RetrievalSets(dataset, sets, rank, world_size), batch_size=None,
                      generator=torch.Generator())  # validating leaves the global random state alone
