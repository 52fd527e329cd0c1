"""Hard distractors (paper appendix D.2): training batches in which images meet their nearest visual neighbours.

``nearest_neighbours`` finds each training image's k nearest neighbours by cosine of the retriever's CLIP image
embeddings (read from the feature cache) with faiss: an exact inner-product index up to ``EXACT_LIMIT`` images,
an inverted-file index with fp16 codes beyond (Conceptual Captions' 2.8M images).  The table is saved next to
the features, so it is computed once.

``HardDistractorSampler`` builds each global batch of B from groups: an *anchor* taken from the epoch's shuffled
order together with its k nearest neighbours, ``B // (k + 1)`` groups per batch, the remaining places filled with
further images of the shuffled order (random distractors).  Every anchor therefore meets its k nearest
neighbours, and every neighbour meets its anchor and the anchor's other neighbours.  An epoch keeps ``N // B``
batches, the updates of a run with random batches, and its order is a function of (seed, epoch) alone.
"""

import hashlib
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpointing import atomic_path
from ..errors import UsageError
from .base import sampled_loader
from .samplers import EpochBatchSampler, epoch_generator

EXACT_LIMIT = 200_000
QUERY_CHUNK = 10_000


def _index(features):
    import faiss

    n, dim = features.shape
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = int(4 * np.sqrt(n))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        sample = features[np.random.default_rng(0).choice(n, min(n, 50 * lists), replace=False)]
        index.train(sample)
        index.nprobe = 16
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
    """``nearest_neighbours`` of a ``CachedRows`` (the retriever's features), saved beside its feature cache."""
    digest = hashlib.sha256(rows.indices.tobytes()).hexdigest()[:12]
    path = os.path.join(rows.cache.directory, f"neighbours-k{k}-{digest}.npy")
    if os.path.isfile(path):
        return np.load(path)
    neighbours = nearest_neighbours(rows.all(), k)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, neighbours)
    return neighbours


class HardDistractorSampler(EpochBatchSampler):
    """Global batches of anchors with their k nearest neighbours, filled up with random images."""

    def __init__(self, neighbours, k, batch_size, seed, rank=0, world_size=1):
        super().__init__(len(neighbours), batch_size, seed, rank=rank, world_size=world_size)
        if not 1 <= k < batch_size:
            raise UsageError(f"--hard_distractors {k} must be between 1 and --batch_size - 1 ({batch_size - 1})")
        self.neighbours = np.asarray(neighbours)[:, :k]
        self.k = k

    def global_batches(self, epoch):
        order = torch.randperm(self.n_items, generator=epoch_generator(self.seed, epoch)).tolist()
        groups_per_batch = self.batch_size // (self.k + 1)
        batches, cursor = [], 0
        for _ in range(self.n_items // self.batch_size):
            batch, members = [], set()

            def add(image):
                if image not in members:
                    members.add(image)
                    batch.append(image)

            for _ in range(groups_per_batch):  # each group adds at most k + 1 images: they always fit
                anchor = order[cursor % self.n_items]
                cursor += 1
                add(anchor)
                for neighbour in self.neighbours[anchor].tolist():
                    add(neighbour)
            while len(batch) < self.batch_size:  # random distractors
                add(order[cursor % self.n_items])
                cursor += 1
            batches.append(batch)
        return batches


def hard_distractor_loader(dataset, k, batch_size, seed, num_workers=0, rank=0, world_size=1):
    """Training batches of the ``EncodedSplit`` ``dataset`` with k hard distractors per anchor (its receiver
    inputs must be the retriever's cached features)."""
    neighbours = cached_neighbours(dataset.receiver_inputs, k)
    sampler = HardDistractorSampler(neighbours, k, batch_size, seed, rank=rank, world_size=world_size)
    return sampled_loader(dataset, sampler, seed, num_workers)
