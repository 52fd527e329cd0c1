"""What every captioner offers the game, and the token bookkeeping they share."""

from typing import List, NamedTuple

import torch


class Rollout(NamedTuple):
    """Captions for a batch of images, as the game's Sender returns them.

    ``message`` holds token ids padded after the stop token to a fixed width (so EGG can concatenate batches);
    ``log_prob`` is the caption log-probability summed over generated tokens up to and including the stop
    token, with gradients; ``entropy`` is the mean per-token entropy over the same positions.  Decoded captions
    (beam search) carry zero ``log_prob`` and ``entropy``.
    """

    message: torch.Tensor  # [B, T] long
    log_prob: torch.Tensor  # [B]
    entropy: torch.Tensor  # [B]
    length: torch.Tensor  # [B] generated tokens, stop token included
    text: List[str]


def caption_mask(tokens, stop_ids):
    """True at generated positions up to and including each row's first stop token.  ``tokens``: [B, T]."""
    is_stop = torch.isin(tokens, torch.as_tensor(stop_ids, device=tokens.device))  # [B, T]
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()  # [B, T] stop tokens strictly before t
    return stops_before == 0


def pad_to(tokens, width, pad_id):
    """Right-pads ``tokens`` [B, T] with ``pad_id`` to ``[B, width]``."""
    if tokens.shape[1] >= width:
        return tokens[:, :width]
    padding = tokens.new_full((tokens.shape[0], width - tokens.shape[1]), pad_id)
    return torch.cat([tokens, padding], dim=1)


def pad_batch(rows, pad_id):
    """Token id lists -> ``tokens`` [B, T] padded with ``pad_id`` and ``labels`` [B, T] with -100 at padding.

    -100 is the ignore index of ``cross_entropy``: padding is ignored, never mistaken for a real token.
    """
    width = max(len(ids) for ids in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(ids)
    return tokens, labels


def sequence_log_prob(logits, tokens, mask):
    """Summed log-probability and mean entropy of ``tokens`` under ``logits``, over ``mask``.

    ``logits`` [B, T, V] predict ``tokens`` [B, T]; ``mask`` [B, T] marks generated positions.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    token_log_prob = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]
    entropy = -(log_probs.exp() * log_probs).sum(-1)  # [B, T]
    mask = mask.to(log_probs.dtype)
    lengths = mask.sum(1).clamp(min=1)  # [B]
    return (token_log_prob * mask).sum(1), (entropy * mask).sum(1) / lengths
