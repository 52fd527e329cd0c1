"""Pretrained parts: loaded strictly (every weight must come from the checkpoint), and frozen where they never train."""

import os
import warnings

from torch import nn

from .errors import UsageError, missing_weights


def from_pretrained_strict(model_class, source, flag, what):
    """``model_class.from_pretrained(source)`` that fails on missing or mis-shaped weights instead of silently
    initialising them at random; keys the checkpoint has beyond the model's are reported as a warning.

    Weights load in fp32 whatever dtype the checkpoint was saved in (transformers 5 would keep a bf16 checkpoint's
    bf16, in which Adam's small updates vanish): the trained copy is fp32, and ``--precision`` autocasts.
    """
    import torch

    try:
        model, info = model_class.from_pretrained(source, output_loading_info=True, dtype=torch.float32)
    except Exception as error:  # a truncated or damaged file raises whatever its reader raises
        if os.path.isdir(source):
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            raise UsageError(f"cannot load {what} from the folder {source} ({flag}): {reason}; its files are "
                             "damaged or incomplete: copy them again") from None  # fmt: skip
        if isinstance(error, (OSError, ValueError)):  # no network, or no such model on the hub
            raise missing_weights(what, source, flag, error) from error
        raise
    problems = {name: sorted(info.get(name) or []) for name in ("missing_keys", "mismatched_keys")}
    if any(problems.values()):
        raise UsageError(f"{source} ({flag}) does not match {model_class.__name__}: {problems}")
    if info.get("unexpected_keys"):
        warnings.warn(f"{source}: weights not used by {model_class.__name__}: {sorted(info['unexpected_keys'])}",
                      stacklevel=2)  # fmt: skip
    return model.eval()

class FrozenModule(nn.Module):
    """Base class for frozen pretrained parts (the retriever, the captioner's image encoder).

    Subclasses call ``self.freeze()`` once their weights are loaded.  ``train()`` is overridden so that the
    Trainer's ``game.train()`` cannot switch dropout or normalisation statistics back on.  Games leave frozen
    parts out of their checkpoints (see ``archs.DiscriminativeGame``): they are rebuilt from their own source.
    """

    def freeze(self):
        """Stops gradients and puts the module in eval mode for good; returns self."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode=True):
        """Ignores ``mode``: a frozen module stays in eval mode."""
        return super().train(False)
