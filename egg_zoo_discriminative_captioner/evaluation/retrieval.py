"""Text-to-image retrieval P@1 with the paper's protocol, for any captions (generated or human)."""

import torch
from tqdm.auto import tqdm

from ..data.base import retrieval_loader


@torch.no_grad()
def generate_captions(captioner, dataset, batch_size=100, num_beams=5, device="cpu"):
    """Beam-search captions for every image of an ``EncodedSplit``, in split order."""
    captions = []
    inputs = dataset.sender_inputs
    for start in tqdm(range(0, len(inputs), batch_size), desc=f"captioning {dataset.split.name}", leave=False):
        captions += captioner.generate(inputs[start : start + batch_size].to(device), num_beams=num_beams).text
    return captions


@torch.no_grad()
def retrieval_accuracy(retriever, captions, dataset, candidates=100, seed=0, device="cpu"):
    """P@1 of ``captions`` (one per image of ``dataset``, in split order): each image is the target among the
    ``candidates`` of its batch, batches drawn as in validation (``data.retrieval_loader``)."""
    hits = []
    for _, _, image_embeddings, aux_input in retrieval_loader(dataset, candidates, seed):
        index = aux_input["image_index"]
        texts = retriever.encode_texts([captions[i] for i in index.tolist()])  # [B, D]
        scores = texts @ image_embeddings.to(device).float().T  # [B, B]
        hits.append(scores.argmax(dim=1).cpu() == torch.arange(len(index)))
    return torch.cat(hits).float().mean().item()
