"""Text-to-image retrieval P@1 with the paper's protocol, for any captions (generated or human)."""

import torch
from tqdm.auto import tqdm

from ..data.base import retrieval_batches
from ..losses import strict_hits  # the game's scoring rule, P@1's too

PROTOCOL = (
    "text-to-image P@1 among {candidates} candidates: each image is the target of its caption once, its "
    "distractors the other images of its set; sets cut from one seeded shuffle of the split (--eval_seed {seed}), "
    "the last N mod {candidates} targets completed with distractors drawn from the rest of the split; "
    "a hit needs the target's score strictly above every distractor's (a tie is a miss)"
)


@torch.no_grad()
def generate_captions(captioner, sender_inputs, batch_size=100, num_beams=5, device="cpu", desc="captioning"):
    """Beam-search captions for every row of ``sender_inputs`` (tensor or ``TransformedImages``), in order."""
    captions = []
    for start in tqdm(range(0, len(sender_inputs), batch_size), desc=desc, leave=False):
        captions += captioner.generate(sender_inputs[start : start + batch_size].to(device), num_beams=num_beams).text
    return captions


@torch.no_grad()
def encode_captions(retriever, captions, batch_size=500, device="cpu"):
    """The retriever's normalised text embeddings ``[N, D]`` (fp32, CPU) of ``captions``."""
    rows = []
    for start in range(0, len(captions), batch_size):
        rows.append(retriever.encode_texts(list(captions[start : start + batch_size])).float().cpu())
    return torch.cat(rows)


def precision_at_1(text_embeddings, image_embeddings, candidates=100, seed=0, targets=None):
    """P@1 of one caption per image: ``text_embeddings`` ``[N, D]`` and ``image_embeddings`` ``[N, D]`` row i is
    image i's caption and image; candidate sets from ``data.retrieval_batches`` (every image scored once).

    ``targets`` (``[N]`` bool, optional): the images whose caption counts, e.g. those with a reference caption;
    every image stays a candidate (the sets are the same), and P@1 is the mean over these targets only (None when
    there is none).  Returns ``(p_at_1, hits [N] bool)``, ``hits`` in split order.
    """
    n = len(image_embeddings)
    if len(text_embeddings) != n:
        raise ValueError(f"{len(text_embeddings)} captions for {n} images")
    counted = None if targets is None else torch.as_tensor(targets, dtype=torch.bool)  # [N]
    if counted is not None and counted.shape != (n,):
        raise ValueError(f"targets must be one bool per image ([{n}]), got shape {list(counted.shape)}")
    hits = torch.zeros(n, dtype=torch.bool)
    for set_targets, fillers in retrieval_batches(n, candidates, seed):
        targets_t = torch.tensor(set_targets)
        candidate_images = image_embeddings[set_targets + fillers].float()  # [C, D], targets first
        scores = text_embeddings[targets_t].float() @ candidate_images.T  # [T, C]
        hits[targets_t] = strict_hits(scores, torch.arange(len(set_targets)))
    if counted is None:
        return hits.float().mean().item(), hits
    return (hits[counted].float().mean().item() if counted.any() else None), hits


@torch.no_grad()
def retrieval_accuracy(retriever, captions, dataset, candidates=100, seed=0, device="cpu"):
    """P@1 of ``captions`` (one per image of the ``EncodedSplit`` ``dataset``, in split order)."""
    texts = encode_captions(retriever, captions, device=device)
    return precision_at_1(texts, torch.as_tensor(dataset.receiver_inputs), candidates, seed)[0]
