"""Hard distractors (paper appendix D.2): training batches in which images meet their nearest visual neighbours.

``nearest_neighbours`` finds each training image's k nearest neighbours by cosine of the retriever's CLIP image
embeddings (read from the feature cache) with faiss: an exact inner-product index up to ``EXACT_LIMIT`` images,
an inverted-file index with fp16 codes beyond (Conceptual Captions' 2.8M images).  The table is saved next to
the features, so it is computed once.

``hard_distractor_loader`` gives every target its own k nearest neighbours: the epoch's batches are the plain
shuffled ones (every image the target once per epoch, resumed exactly), and each item brings the retriever
embeddings of its image's k neighbours (``NeighbourSplit``), which travel with a data-parallel rank's share.  The
game then scores each caption against its own candidate set, the target, its k neighbours and B - 1 - k of the
batch's other images (``archs.own_candidate_scores``): the paper's "k most similar distractors ... the remaining
99 - k distractors are picked randomly" at B = 100.
"""

import hashlib
import os

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..runtime.checkpointing import atomic_path
from ..runtime.errors import UsageError
from .base import collate_game_batch, sampled_loader
from .samplers import EpochBatchSampler

EXACT_LIMIT = 200_000
QUERY_CHUNK = 10_000
# Beyond EXACT_LIMIT rows: an inverted file of LISTS_PER_ROOT * sqrt(n) lists (k-means trained on TRAIN_PER_LIST
# sampled rows per list), PROBES of them searched per query.  Measured by benchmarks/cc_scale.py on 825,000 clustered
# random 512-d rows (a quarter of Conceptual Captions; 2 shared CPU cores), recall@10 against exact search for 50,000
# of them: 0.9990, the whole table in 6.4 min (2.5 of them the index).  Probes 4 / 8 / 32: 0.9984 / 0.9987 / 0.9994
# at 0.11 / 0.19 / 0.46 ms per query (16: 0.28).  2 * sqrt(n) lists: a faster index (1 min), but 0.978 to 0.991
# and slower queries at every probe count (16: 0.9871, 0.50 ms); sqrt(n) lists (330,000 rows, 16 probes): 0.954.
# Sixteen probes keep a margin for real embeddings, less clustered than these; 4 = sqrt(16) lists per sqrt(n) evens
# out a query's two costs, the lists scored (lists) and the rows scanned (probes * n / lists).  Scaled to 3.3M rows:
# about 50 min on 2 cores.
LISTS_PER_ROOT = 4
TRAIN_PER_LIST = 50
PROBES = 16


def _index(features, lists=None, probes=PROBES):
    """A faiss inner-product index of ``features`` ``[n, D]``: exact up to ``EXACT_LIMIT`` rows; beyond, an
    inverted file with fp16 codes of ``lists`` lists (default ``LISTS_PER_ROOT * sqrt(n)``), ``probes`` of them
    searched per query (``benchmarks/cc_scale.py`` measures other choices through these arguments)."""
    import faiss

    n, dim = features.shape
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = lists or int(LISTS_PER_ROOT * np.sqrt(n))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        sample = features[np.random.default_rng(0).choice(n, min(n, TRAIN_PER_LIST * lists), replace=False)]
        index.train(sample)
        index.nprobe = probes
    for start in range(0, n, QUERY_CHUNK * 10):
        index.add(features[start : start + QUERY_CHUNK * 10])
    return index


def nearest_neighbours(features, k):
    """``[N, k]`` indices of each row's k nearest other rows by cosine (rows are L2-normalised first)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)
    index = _index(features)
    neighbours = np.empty((len(features), k), dtype=np.int64)
    for start in tqdm(range(0, len(features), QUERY_CHUNK), desc="nearest neighbours", leave=False):
        end = min(start + QUERY_CHUNK, len(features))
        _, found = index.search(features[start:end], k + 1)  # [b, k + 1], usually the image itself first
        for row, candidates in enumerate(found):
            others = [int(c) for c in candidates if c != start + row and c >= 0][:k]
            neighbours[start + row] = others + [others[-1] if others else start + row] * (k - len(others))
    return neighbours


def cached_neighbours(rows, k):
    """``nearest_neighbours`` of a ``CachedRows`` (the retriever's features), saved beside its feature cache;
    of a tensor ``[N, D]``, computed."""
    if isinstance(rows, torch.Tensor):
        return nearest_neighbours(rows.float().numpy(), k)
    digest = hashlib.sha256(rows.indices.tobytes()).hexdigest()[:12]
    path = os.path.join(rows.cache.directory, f"neighbours-k{k}-{digest}.npy")
    if os.path.isfile(path):
        return np.load(path)
    neighbours = nearest_neighbours(rows.all(), k)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, neighbours)
    return neighbours


class NeighbourSplit(Dataset):
    """An ``EncodedSplit`` whose items also carry the image's k nearest neighbours (``neighbours`` ``[N, k]``):
    ``(sender_input, receiver_input, index, neighbour_inputs [k, D], neighbour_indices [k])``."""

    def __init__(self, dataset, neighbours):
        if len(neighbours) != len(dataset):
            raise ValueError(f"{len(neighbours)} rows of neighbours for a split of {len(dataset)} images")
        self.dataset = dataset
        self.neighbours = torch.as_tensor(np.asarray(neighbours), dtype=torch.long)  # [N, k]

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        neighbours = self.neighbours[index]  # [k]
        return (*self.dataset[index], self.dataset.receiver_inputs[neighbours], neighbours)


def collate_hard_batch(items, label_offset=0):
    """EGG's batch of ``NeighbourSplit`` items: ``collate_game_batch``'s, with each target's neighbours in
    ``aux_input``: ``neighbour_images`` ``[B, k, D]`` (their retriever embeddings) and ``neighbour_index``
    ``[B, k]`` (their indices in the split)."""
    sender_inputs, labels, receiver_inputs, aux_input = collate_game_batch([item[:3] for item in items], label_offset)
    aux_input["neighbour_images"] = torch.stack([item[3] for item in items])
    aux_input["neighbour_index"] = torch.stack([item[4] for item in items])
    return sender_inputs, labels, receiver_inputs, aux_input


def hard_distractor_loader(dataset, k, batch_size, seed, num_workers=0, rank=0, world_size=1):
    """Training batches of the ``EncodedSplit`` ``dataset`` in which every target brings its k nearest neighbours
    (by the cached retriever embeddings, its receiver inputs): the epoch's order is ``training_loader``'s, so
    every image is the target once per epoch and resuming is exact."""
    if not 1 <= k < batch_size:
        raise UsageError(f"--hard_distractors {k} must be between 1 and --batch_size - 1 ({batch_size - 1})")
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, rank=rank, world_size=world_size)  # checks sizes
    neighbours = cached_neighbours(dataset.receiver_inputs, k)
    return sampled_loader(NeighbourSplit(dataset, neighbours), sampler, seed, num_workers, collate=collate_hard_batch)
