"""Captioners: image -> caption policies that the game finetunes.

A captioner is an ``nn.Module`` with ``encode_images(pixels)`` (its frozen input encoder; the result is the
game's ``sender_input`` and may be cached), ``rollout(sender_input, greedy=False) -> Rollout`` (captions with
summed log-probabilities, for REINFORCE), ``generate(sender_input, num_beams) -> Rollout`` (decoding for
evaluation), ``score(sender_input, tokens)``, ``mle_loss(sender_input, captions)``, ``trainable_parameters()``,
``image_transform`` (PIL image -> pixels), ``cache_inputs`` (whether ``encode_images`` is frozen, so its
outputs can be computed once per image), ``config`` (a dataclass saved with checkpoints) and
``save_pretrained(directory)`` (the finetuned model in its native format).
"""

from .base import Rollout
from .blip import BlipCaptioner, load_blip_captioner
from .clipcap import ClipCapCaptioner
from .clipcap_checkpoint import load_clipcap_captioner

CAPTIONERS = {"clipcap": load_clipcap_captioner, "blip": load_blip_captioner}


def build_captioner(opts):
    """The captioner named by ``--captioner``."""
    return CAPTIONERS[opts.captioner](opts)


__all__ = ["BlipCaptioner", "CAPTIONERS", "ClipCapCaptioner", "Rollout", "build_captioner"]
