"""The agents: a captioner Sender and a frozen retriever Receiver (the game between them: ``game.py``)."""

import dataclasses
from typing import Sequence

import torch
from torch import nn

from .baselines import GreedyBaseline, GroupBaseline  # noqa: F401 (part of this module's interface)
from .captioners.base import Captioner
from .choices import ROLLOUTS
from .game import DiscriminativeGame  # noqa: F401 (part of this module's interface)
from .kl_references import FrozenReference, LanguageModelReference  # noqa: F401 (part of this module's interface)
from .retrievers.base import Retriever
from .runtime.errors import UsageError
from .runtime.precision import full_precision


class CaptionerSender(nn.Module):
    """EGG Sender around a captioner: rollouts in training, beam search in evaluation.

    ``rollouts`` is how training captions are decoded: "sample" (from the policy: REINFORCE is unbiased),
    "greedy" (the paper's stated setting) or "beam" (the top of ``num_beams`` beams); greedy and beam rollouts
    are scored like sampled ones, but make REINFORCE biased.  ``greedy_rollouts=True`` means ``rollouts="greedy"``.
    """

    def __init__(self, captioner: Captioner, greedy_rollouts=False, num_beams=5, rollouts=None):
        super().__init__()
        self.captioner = captioner
        self.rollouts = rollouts or ("greedy" if greedy_rollouts else "sample")
        if self.rollouts not in ROLLOUTS:
            raise ValueError(f"unknown rollouts {self.rollouts!r}: one of {', '.join(ROLLOUTS)}")
        self.num_beams = num_beams

    @property
    def greedy_rollouts(self):
        return self.rollouts == "greedy"

    def forward(self, sender_input, aux_input=None, strategy=None, score=None, kl_reference=None, per_image=1):
        """A ``Rollout``; ``strategy`` (sample, greedy, beam) overrides the mode's default (``rollouts`` in
        training, "beam" otherwise).

        Captions are scored (their log-probability, with gradients) unless ``score=False``, the default for beam
        search in evaluation; unscored captions carry zero ``log_prob``.  ``kl_reference`` and ``per_image`` (K
        sampled captions per image): see ``ConditionalCaptioner.rollout``.
        """
        if strategy is None:
            strategy = self.rollouts if self.training else "beam"
        if strategy not in ROLLOUTS:
            raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(ROLLOUTS)}")
        if score is None:
            score = self.training or strategy != "beam"
        num_beams = self.num_beams if strategy == "beam" else 1
        if not score and strategy != "sample":
            return self.captioner.generate(sender_input, num_beams=num_beams)
        extra = {} if kl_reference is None else {"kl_reference": kl_reference}
        if per_image > 1:
            extra["per_image"] = per_image
        return self.captioner.rollout(sender_input, greedy=strategy == "greedy", num_beams=num_beams, **extra)

    def sample(self, sender_input, per_image=1, images_per_decode=None, images_per_encode=None):
        """Training captions (``base.Captions``), decoded by ``rollouts`` without gradients: ``per_image`` K per
        image, ``images_per_decode`` images at a time, encoded ``images_per_encode`` at a time
        (``ConditionalCaptioner.sample``)."""
        num_beams = self.num_beams if self.rollouts == "beam" else 1
        return self.captioner.sample(sender_input, greedy=self.rollouts == "greedy", num_beams=num_beams,
                                     per_image=per_image, images_per_decode=images_per_decode,
                                     images_per_encode=images_per_encode)  # fmt: skip

    def score(self, captions, rows=None, kl_reference=None, kl_estimator="exact"):
        """``base.Scores`` of ``captions``' rows ``rows`` (``ConditionalCaptioner.score_rows``)."""
        return self.captioner.score_rows(captions, rows, kl_reference, kl_estimator)

    def get_extra_state(self):
        # The captioner's typed config travels with every checkpoint, so resuming can check the architecture.
        return {"captioner_config": dataclasses.asdict(self.captioner.config)}

    def set_extra_state(self, state):
        saved, current = state["captioner_config"], dataclasses.asdict(self.captioner.config)
        if saved != current:
            fields = sorted(set(saved) | set(current))
            differ = ", ".join(f"{name} {saved.get(name)!r} -> {current.get(name)!r}" for name in fields
                               if saved.get(name) != current.get(name))  # fmt: skip
            raise UsageError(f"the checkpoint's captioner differs from this run's: {differ} (the checkpoint's -> "
                             "this run's)")  # fmt: skip


class RetrieverReceiver(nn.Module):
    """EGG Receiver around a frozen retriever: caption-candidate cosine similarities ``[B, N]`` in fp32.

    ``receiver_input`` holds the candidates' image embeddings ``[N, D]`` (normalised, e.g. cached) or their
    preprocessed pixels ``[N, 3, H, W]``.  When ``aux_input`` brings each target's hard distractors
    (``neighbour_images`` ``[B, k, D]``, ``neighbour_index`` ``[B, k]``), each caption is scored against its own
    N candidates instead: ``[B, N + k]``, see ``own_candidate_scores``.

    ``extra``: more retrievers (paper section 6).  ``receiver_input`` then holds every retriever's embeddings of
    each candidate, joined along the embedding (``experiment.JoinedRows``), and the scores are ``[R, B, N]``, the
    first retriever's then each other's, each other's cosines times ``T_1 / T_r`` (the retrievers' own
    temperatures): one reward temperature scores each retriever as its own training did.
    """

    def __init__(self, retriever: Retriever, extra: Sequence[Retriever] = ()):
        super().__init__()
        self.retriever = retriever
        self.extra = nn.ModuleList(extra)
        self.scales = [retriever.temperature / other.temperature for other in extra]

    def forward(self, message, receiver_input, aux_input=None):
        if len(self.extra):
            return self._all_scores(message, receiver_input)
        with full_precision(receiver_input.device.type):  # also under EGG's --fp16, which autocasts the game
            images = receiver_input if receiver_input.dim() == 2 else self.retriever.encode_images(receiver_input)
            texts = self.retriever.encode_texts(message).float()  # [B, D]
            scores = texts @ images.float().T  # [B, N]
            if aux_input is None or "neighbour_images" not in aux_input:
                return scores
            neighbour_scores = torch.einsum("bd,bkd->bk", texts, aux_input["neighbour_images"].float())  # [B, k]
            candidate_index = aux_input.get("candidate_index", aux_input["image_index"])  # [N]
            return own_candidate_scores(scores, neighbour_scores, aux_input["image_index"], candidate_index,
                                        aux_input["neighbour_index"])  # fmt: skip


    def _all_scores(self, message, receiver_input):
        if receiver_input.dim() != 2:
            raise ValueError("several retrievers score cached image embeddings [N, D1 + D2 + ...], not pixels")
        with full_precision(receiver_input.device.type):
            retrievers = [self.retriever, *self.extra]
            texts = [retriever.encode_texts(message).float() for retriever in retrievers]  # [B, D_r] each
            ends = torch.tensor([t.shape[1] for t in texts]).cumsum(0).tolist()
            if ends[-1] != receiver_input.shape[1]:
                raise ValueError(f"the retrievers' embeddings add up to {ends[-1]} dimensions, the candidates have "
                                 f"{receiver_input.shape[1]}")  # fmt: skip
            scores = [t @ receiver_input[:, end - t.shape[1] : end].float().T * scale  # [B, N]
                      for t, end, scale in zip(texts, ends, [1.0, *self.scales])]  # fmt: skip
            return torch.stack(scores)  # [R, B, N]


def own_candidate_scores(scores, neighbour_scores, image_index, candidate_index, neighbour_index):
    """Each caption's own N candidates (paper appendix D.2): its target, its k nearest neighbours and N - 1 - k
    random ones of the batch's other images.

    ``scores`` ``[B, N]`` are the captions' cosines with the batch's N images (split indices ``candidate_index``
    ``[N]``; caption i's target is the one whose index is ``image_index[i]``), ``neighbour_scores`` ``[B, k]``
    with each target's neighbours (indices ``neighbour_index`` ``[B, k]``).  Returns ``[B, N + k]``: the batch's
    columns, then the neighbours'; a batch image left out of a caption's set scores ``-inf`` (no weight in the
    reward's softmax, never above the target), so the labels still index the target's own column.  Left out
    are the batch's copies of the target's neighbours (they take part once, as neighbours) and as many more as it
    takes to leave N - 1 - k: the first images after the target in the batch's order, which is random, are kept.
    """
    b, n = scores.shape
    k = neighbour_index.shape[1]
    own = candidate_index.view(1, n) == image_index.view(b, 1)  # [B, N]: the target's column
    is_neighbour = (candidate_index.view(1, n, 1) == neighbour_index.view(b, 1, k)).any(dim=2)  # [B, N]
    eligible = ~own & ~is_neighbour
    after_target = (own.int().argmax(dim=1, keepdim=True) + torch.arange(n, device=scores.device)) % n  # [B, N]
    eligible_in_order = eligible.gather(1, after_target)
    kept_in_order = eligible_in_order & (eligible_in_order.cumsum(dim=1) <= n - 1 - k)
    keep = torch.zeros_like(eligible).scatter(1, after_target, kept_in_order) | own  # [B, N]
    return torch.cat([scores.masked_fill(~keep, float("-inf")), neighbour_scores], dim=1)  # [B, N + k]
