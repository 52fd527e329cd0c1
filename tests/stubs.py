"""A Sender of fixed captions whose summed log-probabilities are parameters, so gradients can be checked by hand.

It speaks the game's Sender protocol: ``sample`` (captions, no gradients), ``score`` (their rows' scores, with
gradients) in training, and ``forward`` (decoded, unscored captions) in evaluation.
"""

import torch
from torch import nn

from egg.zoo.discriminative_captioner.captioners.base import Captions, Rollout, Scores


class FixedCaptions(nn.Module):
    """``log_prob`` [N]: each caption's summed log-probability (a parameter); ``lengths`` [N], ``texts`` [N]."""

    def __init__(self, log_prob, lengths=None, texts=None, width=2):
        super().__init__()
        self.log_prob = nn.Parameter(torch.as_tensor(log_prob, dtype=torch.float))
        n = len(self.log_prob)
        self.lengths = torch.ones(n) if lengths is None else torch.as_tensor(lengths, dtype=torch.float)
        self.texts = ["caption"] * n if texts is None else list(texts)
        self.width = width

    def sample(self, sender_input, per_image=1, images_per_decode=None, images_per_encode=None):
        images = len(self.log_prob) if sender_input is None else len(sender_input)
        n = images * per_image
        image_of_row = torch.arange(images).repeat_interleave(per_image)
        return Captions(torch.zeros(n, self.width, dtype=torch.long), self.lengths[:n], self.texts[:n],
                        self.lengths[:n], image_of_row, None, None)  # fmt: skip

    def score(self, captions, rows=None, kl_reference=None, kl_estimator="exact"):
        rows = torch.arange(len(captions.message)) if rows is None else rows
        return Scores(self.log_prob[rows] * 1, torch.zeros(len(rows)))

    def forward(self, sender_input, aux_input=None, **decoding):  # evaluation: decoded captions, unscored
        captions = self.sample(sender_input)
        zeros = torch.zeros(len(captions.text))
        return Rollout(captions.message, zeros, zeros, captions.length, captions.text)
