"""CLIPScore and RefCLIPScore (Hessel et al. 2021) of captions, under the evaluation retriever.

For a caption c of image v with reference captions R (the retriever's embeddings, L2-normalised here, in float64):

- CLIP-S(c, v) = w * max(cos(c, v), 0), with w = 2.5;
- RefCLIP-S(c, R, v) = the harmonic mean of CLIP-S(c, v) (the weight w included) and max(max_r cos(c, r), 0).

Both are averaged over the images.  Captions and references are encoded as they are, as torchmetrics' ``CLIPScore``
encodes them; ``--clip_score_prompt "A photo depicts"`` puts the prompt of the authors' ``clipscore.py`` in front
of each.  Two choices where the paper and that code part: the text-text side is
clipped at 0 as the paper writes it (the code leaves it unclipped; CLIP's text-text cosines are positive in
practice), and a caption whose two sides are both 0 scores 0 (the harmonic mean's limit; the code divides 0 by 0).
"""

import torch

from .outputs import per_dataset_table
from .retrieval import encode_captions

WEIGHT = 2.5  # the paper's w: stretches CLIP-S of ViT-B/32 over roughly [0, 1]
AUTHORS_PROMPT = "A photo depicts"  # the authors' prefix of every caption and reference (--clip_score_prompt)


def protocol(prompt=""):
    """How the scores were computed, for tables.md."""
    encoded = f"with the prompt {prompt!r} in front" if prompt else "as they are (no prompt)"
    return (f"CLIP-S = {WEIGHT} * max(cos(caption, image), 0) and RefCLIP-S = harmonic mean of CLIP-S and the best "
            f"reference cosine (clipped at 0), both under the evaluation retriever, captions encoded {encoded}, "
            "averaged over images (RefCLIP-S over the described ones; Hessel et al. 2021)")  # fmt: skip


def normalised(embeddings):
    """Rows L2-normalised, in float64 ``[N, D]``."""
    embeddings = torch.as_tensor(embeddings).double()
    return embeddings / embeddings.norm(dim=-1, keepdim=True)


def clip_s(texts, images, weight=WEIGHT):
    """Per-caption CLIP-S ``[N]`` (float64) of caption embeddings ``texts`` ``[N, D]`` against their images
    ``images`` ``[N, D]`` (row i is image i's caption and image)."""
    if texts.shape != images.shape:
        raise ValueError(f"one caption per image: captions {list(texts.shape)}, images {list(images.shape)}")
    cosines = (normalised(texts) * normalised(images)).sum(-1)  # [N]
    return weight * cosines.clamp(min=0)


def best_reference_cosine(texts, references, owners):
    """``[N]`` (float64): each caption's highest cosine with the references of its own image.

    ``references`` ``[M, D]`` are all the references, flattened; ``owners`` ``[M]`` the caption row (image) each
    belongs to.  Every caption needs at least one reference."""
    owners = torch.as_tensor(owners, dtype=torch.long)  # [M]
    if len(owners) != len(references):
        raise ValueError(f"{len(references)} references but {len(owners)} owners")
    if len(texts) and set(owners.tolist()) != set(range(len(texts))):
        raise ValueError("every caption needs at least one reference (and every reference a caption)")
    cosines = (normalised(texts)[owners] * normalised(references)).sum(-1)  # [M]: each reference vs its caption
    best = torch.full((len(texts),), -torch.inf, dtype=torch.float64)
    return best.scatter_reduce(0, owners, cosines, reduce="amax")  # [N]


def harmonic_mean(a, b):
    """Element-wise 2ab / (a + b) of non-negative tensors, 0 where both are 0."""
    total = a + b
    return torch.where(total > 0, 2 * a * b / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def ref_clip_s(texts, images, references, owners, weight=WEIGHT):
    """Per-caption RefCLIP-S ``[N]`` (float64): the harmonic mean of CLIP-S (with its weight) and the best
    reference cosine clipped at 0; ``references`` ``[M, D]`` and ``owners`` ``[M]`` as in
    ``best_reference_cosine``."""
    return harmonic_mean(clip_s(texts, images, weight), best_reference_cosine(texts, references, owners).clamp(min=0))


def prompted(captions, prompt=""):
    """The captions as they are encoded: ``prompt`` and a space in front of each (none without a prompt)."""
    return [f"{prompt} {caption}" for caption in captions] if prompt else list(captions)


def encode_references(retriever, references, prompt="", device="cpu"):
    """The retriever's embeddings ``[M, D]`` of every reference (after ``prompt``), and the image each belongs to
    ``[M]``."""
    flat = [ref for refs in references for ref in refs]
    owners = torch.tensor([i for i, refs in enumerate(references) for _ in refs], dtype=torch.long)
    return encode_captions(retriever, prompted(flat, prompt), device=device), owners


def caption_scores(retriever, images, texts, references, human=None, prompt="", device="cpu"):
    """``{caption type: {"clip_s": mean, "ref_clip_s": mean | None}}`` of each caption type of ``texts``
    (``{type: [caption per image]}``) against ``images`` ``[N, D]`` (the retriever's embeddings) and the split's
    ``references`` (a list of reference captions per image).

    A generated caption's CLIP-S is averaged over every image, its RefCLIP-S over the images with a reference.
    The type ``human`` holds the first reference of each described image (an empty string elsewhere): its
    CLIP-S is averaged over the described images, and it has no RefCLIP-S (it is one of its own references).
    ``prompt``: put in front of every caption and reference (``--clip_score_prompt``).
    """
    described = torch.tensor([bool(refs) for refs in references], dtype=torch.bool)  # [N]
    ref_embeddings, owners = encode_references(retriever, references, prompt, device)  # [M, D], [M]
    # owners renumbered among the described images, the rows RefCLIP-S scores
    row_of = torch.cumsum(described.long(), 0) - 1  # [N]
    described_owners = row_of[owners]  # [M]
    scores = {}
    for kind, captions in texts.items():
        embeddings = encode_captions(retriever, prompted(captions, prompt), device=device)  # [N, D]
        if kind == human:
            per_image = clip_s(embeddings[described], images[described])
            scores[kind] = {"clip_s": per_image.mean().item() if described.any() else None, "ref_clip_s": None}
            continue
        refs = ref_clip_s(embeddings[described], images[described], ref_embeddings, described_owners)
        scores[kind] = {"clip_s": clip_s(embeddings, images).mean().item(),
                        "ref_clip_s": refs.mean().item() if described.any() else None}  # fmt: skip
    return scores


def markdown_lines(records, human_row):
    """The tables.md section: CLIP-S and RefCLIP-S (x100) per data set and model, and ``human_row``'s CLIP-S
    (the references' first caption, over the described images)."""
    def cell(value):
        return "–" if value is None else f"{100 * value:.1f}"

    prompts = sorted({r.get("clip_score_prompt") or "" for r in records})
    lines = ["", f"CLIPScore (x100): {protocol(prompts[0] if len(prompts) == 1 else ' / '.join(prompts))}", ""]
    return lines + per_dataset_table(records, ["CLIP-S", "RefCLIP-S"],
                                     lambda r: f"{cell(r['clip_s'])} | {cell(r['ref_clip_s'])}",
                                     human_row, lambda r: f"{cell(r['clip_s_references'])} | –")  # fmt: skip
