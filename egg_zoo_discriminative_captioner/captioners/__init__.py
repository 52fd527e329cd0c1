"""Captioners: image -> caption policies that the game finetunes.

A captioner is an ``nn.Module`` with ``encode_images(pixels)`` (its frozen input encoder; the result is the
game's ``sender_input`` and may be cached), ``rollout(sender_input, greedy=False) -> Rollout`` (captions with
summed log-probabilities, for REINFORCE), ``generate(sender_input, num_beams) -> Rollout`` (decoding for
evaluation), ``score(sender_input, tokens)``, ``mle_loss(sender_input, captions)``, ``trainable_parameters()``,
``image_encoder.image_transform`` (PIL image -> pixels) and ``config`` (a dataclass saved with checkpoints).
"""

from .base import Rollout
from .clipcap import ClipCapCaptioner, load_clipcap_captioner

CAPTIONERS = {"clipcap": load_clipcap_captioner}


def build_captioner(opts):
    """The captioner named by ``--captioner``."""
    return CAPTIONERS[opts.captioner](opts)


__all__ = ["CAPTIONERS", "ClipCapCaptioner", "Rollout", "build_captioner"]
