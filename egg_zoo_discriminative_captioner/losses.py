"""Rewards of the discrimination game, as EGG losses: ``loss(...) -> (cost [B], aux)`` with cost = -reward."""

import torch

from .choices import REWARDS


def strict_hits(scores, targets):
    """``scores`` ``[T, C]``, ``targets`` ``[T]`` (a column per row) -> ``[T]`` bool: the target's score is
    strictly above every other candidate's (the paper's ``>``; a tie is a miss, unlike ``argmax``)."""
    target_scores = scores.gather(1, targets.view(-1, 1))  # [T, 1]
    others = scores.scatter(1, targets.view(-1, 1), float("-inf"))  # [T, C]
    return target_scores.squeeze(1) > others.max(dim=1).values


class DiscriminationLoss:
    """Text-to-image retrieval among the candidates (paper section 3 and appendix B.2).

    ``receiver_output`` holds the retriever's caption-candidate cosine similarities ``[B, N]``; the match scores
    are ``cosine / temperature`` (the retriever's own temperature is 1/exp(logit_scale): 100 x cosine for CLIP, as
    the authors' receiver scales its features).  Rewards:

    - ``logprob`` (the paper's): log-softmax probability of the target among the N candidates;
    - ``accuracy``: 1 when the target's score is strictly above every distractor's, else 0;
    - ``cosine``: the target's match score alone, ``cosine / temperature`` (CLIPScore-like, not
      discriminative; the authors' ``SimilarityLoss``, on the same scale as the other rewards).

    Scores ``[R, B, N]`` of several retrievers (``archs.RetrieverReceiver``) give the mean of their rewards, and
    the first retriever's P@1.

    ``aux`` holds per-sample ``acc`` (P@1 among the candidates) and ``reward``.  A hit needs the target's score
    strictly above every distractor's, the rule ``evaluate`` scores P@1 with (``evaluation/retrieval.py``): a tie
    is a miss, whatever the candidates' order.
    """

    def __init__(self, reward="logprob", temperature=0.01):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; choose one of {REWARDS}")
        if temperature <= 0:
            raise ValueError(f"the reward temperature must be positive, got {temperature}")
        self.reward = reward
        self.temperature = temperature

    def __call__(self, sender_input, message, receiver_input, receiver_output, labels, aux_input=None):
        if receiver_output.dim() == 3:  # several retrievers: the mean of their rewards
            costs, auxes = zip(*(self(sender_input, message, receiver_input, scores, labels, aux_input)
                                 for scores in receiver_output))  # fmt: skip
            return torch.stack(costs).mean(0), {"acc": auxes[0]["acc"],
                                                "reward": torch.stack([a["reward"] for a in auxes]).mean(0)}
        if receiver_output.dim() != 2 or labels.shape != receiver_output.shape[:1]:
            raise ValueError(
                f"expected scores [B, N] and labels [B], got {tuple(receiver_output.shape)} and {tuple(labels.shape)}"
            )
        cosine = receiver_output.float()  # [B, N]
        match = cosine / self.temperature  # [B, N]
        acc = strict_hits(cosine, labels).float()  # [B]
        if self.reward == "logprob":
            reward = torch.log_softmax(match, dim=1).gather(1, labels.view(-1, 1)).squeeze(1)  # [B]
        elif self.reward == "accuracy":
            reward = acc
        else:
            reward = match.gather(1, labels.view(-1, 1)).squeeze(1)  # [B]
        return -reward, {"acc": acc, "reward": reward.detach()}
