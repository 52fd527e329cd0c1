"""Captioners: image -> caption policies that the game finetunes.

A captioner is an ``nn.Module`` with ``encode_images(pixels)`` (its frozen input encoder; the result is the
game's ``sender_input`` and may be cached), ``rollout(sender_input, greedy=False) -> Rollout`` (captions with
summed log-probabilities, for REINFORCE), ``generate(sender_input, num_beams) -> Rollout`` (decoding for
evaluation), ``score(sender_input, tokens)``, ``mle_loss(sender_input, captions)``, ``trainable_parameters()``,
``image_transform`` (PIL image -> pixels), ``cache_inputs`` (whether ``encode_images`` is frozen, so its
outputs can be computed once per image), ``config`` (a dataclass saved with checkpoints) and
``save_pretrained(directory)`` (the finetuned model in its native format).

``CAPTIONERS`` maps each ``--captioner`` name to its loader, imported only when chosen (the option parser reads
the names without importing torch).
"""

import os

from ..runtime.lazy import exports, load

CAPTIONERS = {
    "clipcap": (".clipcap_checkpoint", "load_clipcap_captioner"),
    "blip": (".blip", "load_blip_captioner"),
    "hf": (".hf_loading", "load_hf_captioner"),
}
_EXPORTS = {"BlipCaptioner": ".blip", "ClipCapCaptioner": ".clipcap", "HFCaptioner": ".hf", "Rollout": ".base"}


def build_captioner(opts):
    """The captioner named by ``--captioner``, decoding with ``--decoder``.

    ``--decoder compiled``'s compiler files go under the cache directory (``<--cache_dir>/torchinductor``), not
    into the system's temporary directory, unless ``TORCHINDUCTOR_CACHE_DIR`` names a place already."""
    captioner = load(__name__, CAPTIONERS[opts.captioner])(opts)
    captioner.decoder = opts.decoder
    if captioner.decoder == "compiled":
        from ..runtime.downloads import default_cache_dir

        cache_dir = opts.cache_dir or default_cache_dir()
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache_dir, "torchinductor"))
    return captioner


__getattr__ = exports(__name__, _EXPORTS)  # the classes load on first use (PEP 562)


__all__ = ["BlipCaptioner", "CAPTIONERS", "ClipCapCaptioner", "HFCaptioner", "Rollout", "build_captioner"]
