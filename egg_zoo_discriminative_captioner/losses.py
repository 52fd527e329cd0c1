"""Rewards of the discrimination game, as EGG losses: ``loss(...) -> (cost [B], aux)`` with cost = -reward."""

import torch

from .choices import REWARDS


class DiscriminationLoss:
    """Text-to-image retrieval among the candidates (paper section 3 and appendix B.2).

    ``receiver_output`` holds the retriever's caption-candidate cosine similarities ``[B, N]``; the match scores
    are ``cosine / temperature``.  Rewards:

    - ``logprob`` (the paper's): log-softmax probability of the target among the N candidates;
    - ``accuracy``: 1 when the target has the highest score, else 0;
    - ``cosine``: the target's cosine similarity alone (CLIPScore-like, not discriminative).

    ``aux`` holds per-sample ``acc`` (P@1 among the candidates) and ``reward``.
    """

    def __init__(self, reward="logprob", temperature=0.01):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; choose one of {REWARDS}")
        if temperature <= 0:
            raise ValueError(f"the reward temperature must be positive, got {temperature}")
        self.reward = reward
        self.temperature = temperature

    def __call__(self, sender_input, message, receiver_input, receiver_output, labels, aux_input=None):
        if receiver_output.dim() != 2 or labels.shape != receiver_output.shape[:1]:
            raise ValueError(
                f"expected scores [B, N] and labels [B], got {tuple(receiver_output.shape)} and {tuple(labels.shape)}"
            )
        cosine = receiver_output.float()  # [B, N]
        log_prob = torch.log_softmax(cosine / self.temperature, dim=1)  # [B, N]
        target_log_prob = log_prob.gather(1, labels.view(-1, 1)).squeeze(1)  # [B]
        acc = (cosine.argmax(dim=1) == labels).float()  # [B]
        if self.reward == "logprob":
            reward = target_log_prob
        elif self.reward == "accuracy":
            reward = acc
        else:
            reward = cosine.gather(1, labels.view(-1, 1)).squeeze(1)
        return -reward, {"acc": acc, "reward": reward.detach()}
