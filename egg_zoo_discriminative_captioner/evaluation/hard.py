"""Retrieval among hard distractors (paper Table 11 and appendix A/D), and its sets as human-study stimuli.

A hard set is ten images of one split: a target and nine distractors, either ImageCoDe's own sets (a data set
that offers ``image_sets(split) -> [(indices, target), ...]``) or the target's nearest neighbours under the
retriever's image embeddings (CLIP ViT-B/32 in the paper), skipping near-duplicates (cosine above 0.8, appendix
A).  The stimuli directory follows the "discritune-stimuli/1" format read by the human-study server.
"""

import json
import os
from dataclasses import dataclass
from typing import List

import torch

from ..runtime.checkpointing import atomic_write_text
from .retrieval import strict_hits

STIMULI_FORMAT = "discritune-stimuli/1"


@dataclass
class HardSet:
    """Ten (or ``set_size``) candidate images of a split, by index, and the target's position among them."""

    indices: List[int]
    target: int


@dataclass
class NeighbourSetCounts:
    """What ``nearest_neighbour_sets`` did with the targets it drew, to say why it built fewer sets than asked.

    A drawn target is either already in an earlier set, or completes a set, or falls short: fewer than
    ``set_size - 1`` admissible images among its ``neighbours`` nearest.  A short target is counted under
    near-duplicates when its neighbours not yet in a set would have completed it but for the near-duplicate
    filter (above ``max_cosine`` with it or a chosen distractor), else under images already in a set.
    """

    asked: int
    n_images: int
    set_size: int
    max_cosine: float
    neighbours: int
    targets_drawn: int = 0
    built: int = 0
    target_in_a_set: int = 0
    short_near_duplicates: int = 0
    short_images_used: int = 0

    def note(self, threshold="cosine"):
        """One line on why fewer sets than asked were built (``threshold`` names the cosine limit, e.g. the
        option that set it), or None when every asked set exists."""
        if self.built >= self.asked:
            return None
        cap = self.n_images // self.set_size
        facts = [f"{self.n_images} images"]
        if cap < self.asked:
            facts[0] += f", at most {cap} disjoint sets of {self.set_size}"
        facts.append(f"{self.targets_drawn} targets drawn")
        outcomes = []
        if self.target_in_a_set:
            outcomes.append(f"{self.target_in_a_set} already in an earlier set")
        short = self.short_near_duplicates + self.short_images_used
        if short:
            outcomes.append(
                f"{short} without {self.set_size - 1} admissible images among their {self.neighbours} nearest "
                f"({self.short_near_duplicates} for near-duplicates above {threshold} {self.max_cosine:g}, "
                f"{self.short_images_used} for want of images not yet in a set)"
            )
        return f"{self.built} of {self.asked} asked ({'; '.join(facts)}: {', '.join(outcomes) or 'none short'})"


class HardSets(list):
    """A list of ``HardSet`` that also carries the ``NeighbourSetCounts`` it was built with (``counts``) and, once
    a caller has worded it for its user, the line on why there are fewer than asked (``note``, None if not)."""

    def __init__(self, sets, counts):
        super().__init__(sets)
        self.counts = counts
        self.note = counts.note()


@torch.no_grad()
def nearest_neighbour_sets(image_embeddings, n_sets=500, set_size=10, max_cosine=0.8, seed=0, chunk=1024):
    """``n_sets`` sets of a target and its ``set_size - 1`` nearest neighbours (cosine of the normalised
    ``image_embeddings`` ``[N, D]``).  Targets are drawn in a random order (``seed``) until ``n_sets`` sets exist or
    every image has been drawn, as the paper iterated over the test images.  A neighbour above ``max_cosine`` with
    the target or with an already chosen distractor is a near-duplicate and skipped; a target already in a set, or
    without enough neighbours, is passed over.  The target sits first (the study shuffles the display order
    itself).  Returns ``HardSets``, a list whose ``counts`` say why fewer than ``n_sets`` sets were built.

    Test splits have at most ~10K images, so the similarities of a chunk of targets against the whole split
    (``[chunk, N]``, 40 MB at N = 10K) and their top-k fit in memory: an exact matmul + topk needs no index.
    """
    embeddings = torch.nn.functional.normalize(image_embeddings.float(), dim=-1)
    n = len(embeddings)
    if n < set_size:
        raise ValueError(f"a split of {n} images cannot make sets of {set_size}")
    targets = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = min(n, 20 * set_size)  # enough neighbours to survive the near-duplicate filter
    counts = NeighbourSetCounts(n_sets, n, set_size, max_cosine, min(k, n - 1))
    sets, used = [], set()  # as in the paper, no image appears in two sets
    for start in range(0, len(targets), chunk):
        if len(sets) >= n_sets:
            break
        rows = torch.tensor(targets[start : start + chunk])
        similarity = embeddings[rows] @ embeddings.T  # [chunk, N]
        similarity[torch.arange(len(rows)), rows] = float("-inf")  # never the target itself
        neighbours = similarity.topk(k, dim=1).indices  # [chunk, k]
        for target, row in zip(rows.tolist(), neighbours.tolist()):
            if len(sets) >= n_sets:
                break
            counts.targets_drawn += 1
            if target in used:
                counts.target_in_a_set += 1
                continue
            chosen, duplicates = [target], 0
            for candidate in row:
                if candidate == target or candidate in used:  # the target is the last of k when k = N
                    continue
                if (embeddings[candidate] @ embeddings[chosen].T).max() > max_cosine:
                    duplicates += 1
                    continue
                chosen.append(candidate)
                if len(chosen) == set_size:
                    sets.append(HardSet(chosen, 0))
                    used.update(chosen)
                    break
            else:  # short: would its neighbours not yet in a set have completed it but for the near-duplicates?
                if len(chosen) - 1 + duplicates >= set_size - 1:
                    counts.short_near_duplicates += 1
                else:
                    counts.short_images_used += 1
    counts.built = len(sets)
    return HardSets(sets, counts)


@torch.no_grad()
def hard_set_accuracy(text_embeddings, image_embeddings, sets):
    """P@1 over hard sets: the target's caption (row ``indices[target]`` of ``text_embeddings``) against the set's
    images; a tie is a miss.  Returns ``(p_at_1, scores)``, ``scores`` ``[S, set_size]`` cosines per set."""
    if not sets:
        return None, torch.empty(0)
    indices = torch.tensor([s.indices for s in sets])  # [S, K]
    targets = torch.tensor([s.target for s in sets])  # [S]
    texts = text_embeddings[indices.gather(1, targets.view(-1, 1)).squeeze(1)].float()  # [S, D]
    scores = torch.einsum("sd,skd->sk", texts, image_embeddings[indices].float())  # [S, K]
    return strict_hits(scores, targets).float().mean().item(), scores


def write_stimuli(directory, sets, split, captions, image_scores=None, dataset="", source="nearest_neighbours"):
    """Writes the sets as study stimuli (``stimuli.json`` + ``images/``) in the "discritune-stimuli/1" format.

    ``captions`` is ``{condition: [caption per image of the split]}`` (conditions in order); ``image_scores``
    ``{condition: [S, K] tensor}`` the retriever's cosines, optional.
    """
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    records = []
    for number, hard_set in enumerate(sets):
        set_id = f"s{number:04d}"
        paths = []
        for position, index in enumerate(hard_set.indices):
            path = f"images/{set_id}_{position}.png"
            split.images[index].convert("RGB").save(os.path.join(directory, path))
            paths.append(path)
        target_index = hard_set.indices[hard_set.target]
        record = {
            "set_id": set_id,
            "images": paths,
            "image_ids": [str(split.ids[i]) for i in hard_set.indices],
            "target": hard_set.target,
            "captions": {condition: texts[target_index] for condition, texts in captions.items()},
        }
        if image_scores:
            record["retriever_scores"] = {c: [round(float(x), 5) for x in s[number]] for c, s in image_scores.items()}
        records.append(record)
    stimuli = {
        "format": STIMULI_FORMAT,
        "dataset": dataset,
        "split": split.name,
        "source": source,
        "conditions": list(captions),
        "sets": records,
    }
    atomic_write_text(json.dumps(stimuli, indent=1), os.path.join(directory, "stimuli.json"))
    return os.path.join(directory, "stimuli.json")
