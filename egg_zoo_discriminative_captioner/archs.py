"""The agents and the game: a captioner Sender, a frozen retriever Receiver, and REINFORCE between them.

``DiscriminativeGame`` follows EGG's ``SymbolGameReinforce``: the Sender emits a message (a caption), the
Receiver scores it against the candidate images, the loss turns the scores into a per-sample cost (the negative
reward), and the Sender's log-probability is pushed along the baselined reward.  Models stay pure: only the game
knows about baselines, advantages and entropy.
"""

import dataclasses

import torch
from torch import nn

from .baselines import GreedyBaseline, GroupBaseline
from .core import MeanBaseline, core
from .errors import UsageError
from .frozen import FrozenModule
from .losses import strict_hits
from .option_groups import KL_ESTIMATORS, LOG_PROB_NORMALIZATIONS
from .option_groups import ROLLOUTS as DECODINGS
from .precision import autocast, full_precision
from .references import FrozenReference, LanguageModelReference  # noqa: F401 (part of this module's interface)


class CaptionerSender(nn.Module):
    """EGG Sender around a captioner: rollouts in training, beam search in evaluation.

    ``rollouts`` is how training captions are decoded: "sample" (from the policy: REINFORCE is unbiased),
    "greedy" (the paper's stated setting) or "beam" (the top of ``num_beams`` beams); greedy and beam rollouts
    are scored like sampled ones, but make REINFORCE biased.  ``greedy_rollouts=True`` means ``rollouts="greedy"``.
    """

    def __init__(self, captioner, greedy_rollouts=False, num_beams=5, rollouts=None):
        super().__init__()
        self.captioner = captioner
        self.rollouts = rollouts or ("greedy" if greedy_rollouts else "sample")
        if self.rollouts not in DECODINGS:
            raise ValueError(f"unknown rollouts {self.rollouts!r}: one of {', '.join(DECODINGS)}")
        self.num_beams = num_beams

    @property
    def greedy_rollouts(self):
        return self.rollouts == "greedy"

    def forward(self, sender_input, aux_input=None, decoding=None, score=None, kl_reference=None, per_image=1):
        """A ``Rollout``; ``decoding`` overrides the mode's default (``rollouts`` in training, "beam" otherwise).

        Captions are scored (their log-probability, with gradients) unless ``score=False``, the default for beam
        search in evaluation; unscored captions carry zero ``log_prob``.  ``kl_reference`` and ``per_image`` (K
        sampled captions per image): see ``ConditionalCaptioner.rollout``.
        """
        if decoding is None:
            decoding = self.rollouts if self.training else "beam"
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}: one of {', '.join(DECODINGS)}")
        if score is None:
            score = self.training or decoding != "beam"
        num_beams = self.num_beams if decoding == "beam" else 1
        if not score and decoding != "sample":
            return self.captioner.generate(sender_input, num_beams=num_beams)
        extra = {} if kl_reference is None else {"kl_reference": kl_reference}
        if per_image > 1:
            extra["per_image"] = per_image
        return self.captioner.rollout(sender_input, greedy=decoding == "greedy", num_beams=num_beams, **extra)

    def get_extra_state(self):
        # The captioner's typed config travels with every checkpoint, so resuming can check the architecture.
        return {"captioner_config": dataclasses.asdict(self.captioner.config)}

    def set_extra_state(self, state):
        saved, current = state["captioner_config"], dataclasses.asdict(self.captioner.config)
        if saved != current:
            raise UsageError(f"checkpoint captioner config {saved} does not match this run's {current}")


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

    def __init__(self, retriever, extra=()):
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


class DiscriminativeGame(nn.Module):
    """REINFORCE discrimination game (DiscriTune) between a captioner Sender and a frozen retriever Receiver.

    In training the objective is ``mean((cost - b) * log p(caption)) - entropy_coeff * mean(entropy)``, where the
    baseline ``b`` comes from ``baseline_type``: an EGG baseline class such as ``MeanBaseline`` or ``NoBaseline``
    (updated in training only), or ``GreedyBaseline`` (the task cost of the greedy caption).
    ``log_prob_normalization`` is how ``log p(caption)`` is taken: "sum" over its tokens (the paper's Eq. 1) or
    "mean", the sum divided by the caption's length with its stop token (the authors' code).  With a
    ``reference`` (``FrozenReference`` of the pretrained captioner, or ``LanguageModelReference``) and
    ``kl_coeff`` > 0, the cost is shaped by ``kl_coeff * KL``, without gradient, which keeps the finetuned
    language fluent.  ``kl_estimator`` "sampled" takes ``KL = log p(caption) - log p_ref(caption)``, a sampled
    estimate of ``KL(p || p_ref)`` only on sampled rollouts (on greedy or beam captions it is a log-ratio that can
    be negative; the command line refuses that combination); "exact" the exact per-token ``KL(p_ref || p)`` over
    the vocabulary, summed over the caption's positions (the authors' ``KLRegularizer``, computed in the scoring
    pass).  The KL is normalised like the log-probability: per token with "mean".  ``standardize_advantage``
    rescales ``cost - b`` to zero mean and unit variance within the batch; it removes any constant baseline, so
    with it a running-mean baseline makes no difference.  As in EGG, the returned loss also adds ``cost.mean()``, which
    carries no gradient here (the retriever is frozen) and makes the logged loss the mean negative reward.
    ``rollouts_per_image`` K > 1 samples K captions of each image in training, each scored against the batch's
    candidates, its cost compared with its image's other rollouts by a ``GroupBaseline`` (or any other baseline);
    with the group baseline ``standardize_advantage`` divides by the image's group standard deviation (GRPO).  The
    logs then hold each image's reward standard deviation over its rollouts (``group_reward_std``) and whether
    they were all equal (``identical_rewards``, no learning signal).
    ``whole_batch`` (data-parallel runs, see ``distributed.py``) gathers a per-sample tensor from every rank's
    share of the global batch, so that the baseline's update and standardised advantages see the global batch.
    In evaluation, a batch whose ``aux_input`` has ``padding`` is this rank's share of a candidate set: the game
    gathers the shares' costs and logs, drops the padding rows and returns the whole set's, as one process would.

    ``precision`` ("fp32", "bf16" or "fp16") is the captioner's: its passes run under autocast in it, while the
    retriever, the reward and the KL reference run in fp32 with autocast switched off (also when EGG's Trainer
    autocasts the whole game under ``--fp16``).

    Checkpoints (``state_dict``) hold everything except ``FrozenModule`` parts, which are rebuilt from their
    own source; they do hold the baseline's running statistics.
    """

    def __init__(
        self,
        sender,
        receiver,
        loss,
        baseline_type=MeanBaseline,
        entropy_coeff=0.0,
        standardize_advantage=False,
        reference=None,
        kl_coeff=0.0,
        kl_estimator="sampled",
        log_prob_normalization="sum",
        train_logging_strategy=None,
        test_logging_strategy=None,
        precision="fp32",
        whole_batch=None,
        rollouts_per_image=1,
        retriever_mix="mean",
    ):
        super().__init__()
        self.sender = sender
        self.receiver = receiver
        self.loss = loss
        self.baseline = baseline_type()
        if rollouts_per_image < 1:
            raise ValueError(f"rollouts_per_image must be at least 1, got {rollouts_per_image}")
        if isinstance(self.baseline, GroupBaseline):
            if rollouts_per_image < 2:
                raise ValueError("a group baseline needs rollouts_per_image of 2 or more")
            self.baseline.group_size = rollouts_per_image
        self.rollouts_per_image = rollouts_per_image
        if retriever_mix not in ("mean", "alternate"):
            raise ValueError(f"unknown retriever mix {retriever_mix!r}: mean or alternate")
        self.retriever_mix = retriever_mix
        if retriever_mix == "alternate":  # whose turn it is, saved in checkpoints: a resumed run goes on in turn
            self.register_buffer("retriever_turn", torch.zeros((), dtype=torch.long))
        self.entropy_coeff = entropy_coeff
        self.standardize_advantage = standardize_advantage
        if kl_coeff and reference is None:
            raise ValueError("a KL penalty (kl_coeff > 0) needs the pretrained captioner as reference")
        if kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {kl_estimator!r}: one of {', '.join(KL_ESTIMATORS)}")
        if log_prob_normalization not in LOG_PROB_NORMALIZATIONS:
            raise ValueError(
                f"unknown log-probability normalization {log_prob_normalization!r}: one of "
                f"{', '.join(LOG_PROB_NORMALIZATIONS)}"
            )
        self.reference = reference
        self.kl_coeff = kl_coeff
        self.kl_estimator = kl_estimator
        self.log_prob_normalization = log_prob_normalization
        self.precision = precision
        self.whole_batch = whole_batch or _this_batch
        # Image games keep logs small: the Trainer holds every batch's Interaction for a whole epoch.
        self.train_logging_strategy = train_logging_strategy or core.LoggingStrategy.minimal()
        self.test_logging_strategy = test_logging_strategy or core.LoggingStrategy.minimal()
        self.register_state_dict_post_hook(_drop_frozen_parts)
        self.register_load_state_dict_pre_hook(_keep_frozen_parts)

    def forward(self, sender_input, labels, receiver_input=None, aux_input=None):
        exact_kl = self.training and self.reference is not None and self.kl_estimator == "exact"
        per_image = self.rollouts_per_image if self.training else 1
        decoding = {"kl_reference": self.reference} if exact_kl else {}
        image_labels, image_aux_input = labels, aux_input  # one row per image; with K rollouts, K rows per image
        if per_image > 1:
            decoding["per_image"] = per_image
            labels, aux_input = labels.repeat_interleave(per_image), _per_rollout(aux_input, per_image)  # [B * K]
        rollout = self._send(sender_input, labels, aux_input, **decoding)
        cost, aux, scores = self._cost(sender_input, rollout, labels, receiver_input, aux_input)
        if cost.shape != labels.shape:
            raise ValueError(
                f"the loss must return one cost per sample, shape {tuple(labels.shape)}; got {tuple(cost.shape)}"
                " (does it average over the batch?)"
            )
        if self.training:
            cost_value = cost.detach()  # [B]
            log_prob = self._normalized(rollout.log_prob, rollout)  # [B]
            if self.reference is not None:
                if exact_kl:
                    if rollout.kl is None:
                        raise ValueError("the exact KL needs a sender whose rollouts carry it (Rollout.kl)")
                    kl = rollout.kl  # [B] summed over the caption's positions
                else:
                    rows = sender_input.repeat_interleave(per_image, dim=0) if per_image > 1 else sender_input
                    kl = rollout.log_prob.detach() - self.reference(rows, rollout.message)  # [B]
                kl = self._normalized(kl, rollout)
                cost_value = cost_value + self.kl_coeff * kl
                aux["kl"] = kl
            if isinstance(self.baseline, GreedyBaseline):
                greedy = self._greedy_cost(sender_input, image_labels, receiver_input, image_aux_input)  # [B]
                self.baseline.cost = greedy.repeat_interleave(per_image)  # [B * K]
            # A copy: upstream EGG's MeanBaseline updates the tensor it returned in place, in update() below.
            baseline = torch.as_tensor(self.baseline.predict(cost_value), device=cost.device).detach().clone()
            advantage = cost_value - baseline  # [B]
            if self.standardize_advantage and isinstance(self.baseline, GroupBaseline):
                spread = cost_value.view(-1, per_image).std(dim=1).repeat_interleave(per_image)  # [B * K]
                advantage = advantage / (spread + 1e-8)  # GRPO: within each image's group
            elif self.standardize_advantage:
                whole = self.whole_batch(advantage)  # [B_global]
                advantage = (advantage - whole.mean()) / (whole.std() + 1e-8)
            policy_loss = (advantage * log_prob).mean()
            entropy_loss = -self.entropy_coeff * rollout.entropy.mean() if self.entropy_coeff else 0.0
            self.baseline.update(self.whole_batch(cost_value))
        else:
            baseline = torch.zeros(1, device=cost.device)
            policy_loss = entropy_loss = torch.zeros((), device=cost.device)

        if per_image > 1:
            groups = aux["reward"].view(-1, per_image)  # [B, K]
            aux["group_reward_std"] = groups.std(dim=1).repeat_interleave(per_image)
            aux["identical_rewards"] = (groups == groups[:, :1]).all(dim=1).float().repeat_interleave(per_image)
        aux["baseline"] = torch.as_tensor(baseline, device=cost.device).float().reshape(-1).detach().clone()
        aux["sender_entropy"] = rollout.entropy.detach()
        aux["length"] = rollout.length
        strategy = self.train_logging_strategy if self.training else self.test_logging_strategy
        interaction = strategy.filtered_interaction(
            sender_input=sender_input,
            receiver_input=receiver_input,
            labels=labels,
            aux_input=aux_input,
            message=rollout.message,
            receiver_output=scores.detach(),
            message_length=rollout.length,
            aux=aux,
        )
        if not self.training and aux_input and "padding" in aux_input:
            cost, interaction = self._whole_set(aux_input["padding"], cost, interaction)
        if self.training and self.retriever_mix == "alternate":
            self.retriever_turn += 1
        return policy_loss + entropy_loss + cost.mean(), interaction

    def _normalized(self, per_caption, rollout):
        """A caption's summed ``per_caption`` value ``[B]`` under ``log_prob_normalization`` (mean: / length)."""
        if self.log_prob_normalization == "mean":
            return per_caption / rollout.length.to(per_caption.dtype).clamp(min=1)  # length counts the stop token
        return per_caption

    def _send(self, sender_input, labels, aux_input, **decoding):
        with autocast(self.precision, labels.device.type):
            return self.sender(sender_input, aux_input, **decoding)

    def _cost(self, sender_input, rollout, labels, receiver_input, aux_input):
        """Per-sample cost ``[B]``, the loss's aux and the (first) retriever's scores ``[B, N]``, in fp32.

        With several retrievers (scores ``[R, B, N]``) the loss sees all of them (``--retriever_mix mean``) or, in
        training with ``alternate``, the one whose turn it is; each one's P@1 is logged as ``acc_retriever<i>``."""
        with full_precision(labels.device.type):
            scores = self.receiver(rollout.text, receiver_input, aux_input)  # [B, N], or [R, B, N]
            rewarded = scores
            if scores.dim() == 3 and self.training and self.retriever_mix == "alternate":
                rewarded = scores[int(self.retriever_turn) % scores.shape[0]]
            cost, aux = self.loss(sender_input, rollout.message, receiver_input, rewarded, labels, aux_input)
            if scores.dim() == 3:
                for i in range(1, scores.shape[0]):
                    aux[f"acc_retriever{i + 1}"] = strict_hits(scores[i], labels).float()
                if rewarded is not scores:  # the loss saw another retriever's: P@1 is the first retriever's
                    aux["acc"] = strict_hits(scores[0], labels).float()
                scores = scores[0]
        return cost, aux, scores

    def _whole_set(self, padding, cost, interaction):
        """A distributed evaluation: this rank captioned its share of a candidate set (``data.retrieval_share``).

        Returns the set's costs and logs gathered from every rank, ``padding`` rows dropped, in the set's order: on
        every rank, what one process computes for the whole set.
        """
        keep = ~self.whole_batch(padding)  # [W * share]: the ranks' shares in rank order are the set's targets

        def rows(values):  # [share, ...] on each rank -> [T, ...]
            return None if values is None else self.whole_batch(values)[keep]

        # receiver_input (the candidates) is the same on every rank; the evaluation's baseline is one zero per batch.
        per_row = ("sender_input", "labels", "message", "receiver_output", "message_length")
        aux = {key: value if key == "baseline" else rows(value) for key, value in interaction.aux.items()}
        aux_input = interaction.aux_input
        if aux_input is not None:
            aux_input = {key: rows(value) for key, value in aux_input.items() if key != "padding"}
        fields = {name: rows(getattr(interaction, name)) for name in per_row}
        return rows(cost), dataclasses.replace(interaction, aux=aux, aux_input=aux_input, **fields)

    @torch.no_grad()
    def _greedy_cost(self, sender_input, labels, receiver_input, aux_input):
        greedy = self._send(sender_input, labels, aux_input, decoding="greedy", score=False)
        return self._cost(sender_input, greedy, labels, receiver_input, aux_input)[0]

    def get_extra_state(self):
        state = {key: value for key, value in vars(self.baseline).items() if key != "cost"}
        return {"baseline": state}

    def set_extra_state(self, state):
        vars(self.baseline).update(state["baseline"])


def _per_rollout(aux_input, per_image):
    """``aux_input`` for K rollouts per image: every per-image tensor repeated K times; the batch's image indices
    also stay as the candidates' (``candidate_index``), which the rollouts are scored against."""
    if aux_input is None:
        return None
    repeated = {key: value.repeat_interleave(per_image, dim=0) for key, value in aux_input.items()
                if key != "candidate_index"}  # fmt: skip
    if "image_index" in aux_input:
        repeated["candidate_index"] = aux_input.get("candidate_index", aux_input["image_index"])
    return repeated


def _this_batch(values):
    """A single process's batch is the whole batch."""
    return values


def _frozen_prefixes(module, prefix):
    return [f"{prefix}{name}." for name, sub in module.named_modules() if name and isinstance(sub, FrozenModule)]


def _drop_frozen_parts(module, state_dict, prefix, local_metadata):
    frozen = _frozen_prefixes(module, prefix)
    for key in [key for key in state_dict if key.startswith(tuple(frozen))]:
        del state_dict[key]


def _keep_frozen_parts(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
    # Checkpoints leave frozen parts out: let them keep the weights they were built with.
    for name, sub in module.named_modules():
        if name and isinstance(sub, FrozenModule):
            for key, value in sub.state_dict().items():
                state_dict.setdefault(f"{prefix}{name}.{key}", value)
