"""Pretrained parts that never train: no gradients, always in eval mode."""

from torch import nn


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
