"""Distractors beyond a call's own images: a pool of the retriever's image embeddings (its feature cache).

``hard_distractors`` k = 0: every caption also meets every pool image.  k > 0 is the game's ``--hard_distractors k``
(paper appendix D.2): each caption meets its target's k nearest pool images by image cosine and C - 1 - k of the
call's other images, scored by ``archs.own_candidate_scores`` through the receiver, as in the game.  Pool rows that
are copies of a call image (cosine at or above ``duplicate_cosine``: the target itself, when the pool is the
training split's cache) are never its distractors; a call image with a copy in the pool takes the copy's index, so
that a target's neighbour that is also in the call meets its caption once, as the game's batch copies do.
"""

from typing import Optional

import torch

from ..runtime.errors import UsageError


def pool_features(distractors):
    """The pool as normalised fp32 embeddings ``[M, D]``: a tensor or array, or a feature-cache directory (the
    retriever's cache of a split, ``<feature_cache_dir>/<data set>/<split>/retriever``), its readable images."""
    if isinstance(distractors, str):
        from ..data.feature_cache import FeatureCache

        cache = FeatureCache(distractors)
        distractors = cache.rows([i for i in range(len(cache)) if i not in cache.unreadable])
    features = torch.as_tensor(distractors).float()
    if features.dim() != 2 or len(features) == 0:
        raise UsageError(f"distractors must be image embeddings [M, D], got shape {tuple(features.shape)}")
    return torch.nn.functional.normalize(features, dim=-1)


class Distractors:
    """Extra candidates for a reward call: ``pool`` ``[M, D]`` (normalised embeddings of the first retriever) and
    ``k`` (0: the whole pool; k > 0: each target's k nearest)."""

    def __init__(self, pool, k=0, duplicate_cosine=0.999):
        if k < 0:
            raise UsageError(f"hard_distractors must be 0 or more, got {k}")
        self.pool = pool_features(pool)
        self.k, self.duplicate_cosine = k, duplicate_cosine
        if k > len(self.pool) - 1:
            raise UsageError(f"hard_distractors {k} needs more than {k} pool images, the pool has {len(self.pool)}")

    def candidates(self, images, targets):
        """``(receiver_input, aux_input)`` for the call's image embeddings ``images`` ``[C, D]`` and ``targets``
        ``[N]``: the receiver's candidates and, for k > 0, the game's ``aux_input`` of hard distractors."""
        pool = self.pool.to(images.device)
        if pool.shape[1] != images.shape[1]:
            raise UsageError(f"the distractors have {pool.shape[1]} dimensions, the retriever's embeddings "
                             f"{images.shape[1]}: give the retriever's own features")  # fmt: skip
        cosine = images @ pool.T  # [C, M]
        copy = cosine >= self.duplicate_cosine  # [C, M]: pool rows that are a call image
        if self.k == 0:
            kept = ~copy.any(dim=0)  # [M]
            return torch.cat([images, pool[kept]]), None
        c = len(images)
        if self.k > c - 1:
            raise UsageError(f"hard_distractors {self.k} leaves no room among the call's {c} images: each caption "
                             f"meets k neighbours and C - 1 - k of the call's images (C > k)")  # fmt: skip
        neighbour_index = cosine.masked_fill(copy, float("-inf")).topk(self.k, dim=1).indices  # [C, k]
        own = torch.where(copy.any(dim=1), copy.int().argmax(dim=1), -1 - torch.arange(c, device=images.device))  # [C]
        aux_input = {
            "neighbour_images": pool[neighbour_index][targets],  # [N, k, D]
            "neighbour_index": neighbour_index[targets],  # [N, k]
            "image_index": own[targets],  # [N]
            "candidate_index": own,  # [C]
        }
        return images, aux_input


def distractors_of(pool, k, duplicate_cosine) -> Optional[Distractors]:
    """``Distractors`` of a pool, or None without one (then k must be 0)."""
    if pool is None:
        if k:
            raise UsageError("hard_distractors needs a pool: pass distractors= (the retriever's feature cache)")
        return None
    return Distractors(pool, k, duplicate_cosine)
