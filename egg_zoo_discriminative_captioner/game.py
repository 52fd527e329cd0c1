"""The REINFORCE game between a captioner Sender and a frozen retriever Receiver (DiscriTune).

``DiscriminativeGame`` follows EGG's ``SymbolGameReinforce``: the Sender emits a message (a caption), the
Receiver scores it against the candidate images, the loss turns the scores into a per-sample cost (the negative
reward), and the Sender's log-probability is pushed along the baselined reward.  Models stay pure: only the game
knows about baselines, advantages and entropy.
"""

import dataclasses
from typing import NamedTuple, Optional

import torch
from torch import nn

from .baselines import StepBatch, as_baseline
from .captioners.base import KLReference, Scores
from .choices import KL_ESTIMATORS, LOG_PROB_NORMALIZATIONS
from .core import MeanBaseline, core
from .losses import strict_hits
from .micro_batches import recomputed_loss, row_chunks
from .runtime.precision import autocast, full_precision
from .runtime.pretrained import FrozenModule


class Rollouts(NamedTuple):
    """A training step's captions and what they got, kept by the game for callbacks that show them (caption
    tables): references to the step's own tensors, no copies."""

    text: list  # [N] the sampled captions, image i's K at i*K ... i*K + K - 1
    labels: torch.Tensor  # [N] each caption's target column in ``scores``
    scores: torch.Tensor  # [N, C] the (first) retriever's scores against the candidates
    reward: torch.Tensor  # [N]
    advantage: torch.Tensor  # [N] the reward's (positive: the update makes the caption more likely)
    aux_input: Optional[dict]  # image_index [N], candidate_index (the columns' images), neighbour_index


class DiscriminativeGame(nn.Module):
    """REINFORCE discrimination game (DiscriTune) between a captioner Sender and a frozen retriever Receiver.

    A training step, one short method each:

    1. ``_roll_out``: the Sender decodes ``rollouts_per_image`` K captions of each image, without gradients;
    2. ``_cost``: the Receiver scores every caption against the batch's candidates and the loss turns the scores
       into a cost per caption (the negative reward); ``_scores`` gives each caption's log-probability, entropy
       and KL to the KL reference from a teacher-forced scoring pass;
    3. ``_advantage``: the baseline turns the costs, shaped by ``kl_coeff * KL``, into advantages;
    4. ``_policy_loss``: ``mean(advantage * log p(caption)) - entropy_coeff * mean(entropy)``, to which the game
       adds ``mean(cost)``, as EGG's games do: it carries no gradient here (the retriever is frozen) and puts the
       mean negative reward into the logged loss;
    5. ``_logs``.

    Arguments:

    - ``sender``: a ``CaptionerSender``, or a module with its ``sample`` and ``score`` (training) and ``forward``
      (evaluation); ``receiver``: a ``RetrieverReceiver`` (frozen); ``loss``: an EGG loss ``(sender_input,
      message, receiver_input, scores, labels, aux_input) -> (cost [N], aux)`` (``losses.DiscriminationLoss``).
    - ``baseline_type``: a class whose instances turn costs into advantages, this project's (``baselines.py``)
      or EGG's ``MeanBaseline`` / ``NoBaseline``; ``standardize_advantage``: the baseline also divides the
      advantages by a spread (``Baseline.standardized``).  With ``retriever_mix="alternate"`` each retriever has
      a baseline of its own (their rewards have different scales).
    - ``rollouts_per_image`` K: captions sampled per image in training, each scored against the batch's
      candidates; ``entropy_coeff``: weight of the entropy bonus.
    - ``kl_reference``, ``kl_coeff``, ``kl_estimator``: a KL penalty towards a frozen KL reference
      (``kl_references.py``), without gradient: "sampled", ``log p - log p_ref`` of the caption (a KL estimate only
      on sampled rollouts); "exact", the per-token ``KL(p_ref || p)`` over the vocabulary, summed over the
      caption (the authors' ``KLRegularizer``).
    - ``kl_in_baseline``: the baseline sees the KL-shaped cost (this project's choice); False adds ``kl_coeff *
      KL`` to the advantage after the baseline, whose running mean then follows the task cost alone (the
      authors' ``ReinforceCaptionGame``).
    - ``log_prob_normalization``: "sum" of the caption's token log-probabilities (the paper's Eq. 1), or "mean",
      divided by the caption's length as the authors' code counts it (``ConditionalCaptioner.mean_divisor``);
      the KL is normalised alike.
    - ``micro_batch_size`` m: images per scoring pass with gradients (None: the whole batch), see
      ``micro_batches.py``: m changes the step's memory, not its result; ``rollout_batch_size`` r: images per
      decode (None: the whole batch), which changes the random numbers a caption draws, not its distribution.
      The captioner's frozen image encoder reads the smaller of m and r images at a time (the whole batch when
      neither is given): the same encodings up to float rounding, with its activations bounded too.
    - ``retriever_mix``: "mean" of several retrievers' rewards, or "alternate", one per training batch in turn.
    - ``precision``: the captioner's autocast ("fp32", "bf16" or "fp16"); the retriever, the reward and the KL
      reference run in fp32 with autocast off, also when EGG's Trainer autocasts the game under ``--fp16``.
    - ``whole_batch``: in data-parallel runs (``runtime/distributed.py``) gathers a per-row tensor from every rank, so
      that baselines and standardisation see the global batch.
    - ``train_logging_strategy``, ``test_logging_strategy``: EGG's ``LoggingStrategy`` (minimal by default: the
      Trainer holds every batch's Interaction for a whole epoch).

    After each training step, ``last_rollouts`` holds its captions, rewards and advantages (``Rollouts``).

    In evaluation the Sender decodes with beam search and the loss is ``mean(cost)``.  A batch whose
    ``aux_input`` has ``padding`` is this rank's share of a candidate set: the game gathers the shares' costs and
    logs, drops the padding rows and returns the whole set's, as one process would.  Checkpoints (``state_dict``)
    hold everything but ``FrozenModule`` parts, which are rebuilt from their own source, and the baselines'
    running statistics.
    """

    def __init__(self, sender, receiver, loss, baseline_type=MeanBaseline, entropy_coeff=0.0,
                 standardize_advantage=False, kl_reference: Optional[KLReference] = None, kl_coeff=0.0,
                 kl_estimator="sampled", kl_in_baseline=True, log_prob_normalization="sum", train_logging_strategy=None,
                 test_logging_strategy=None, precision="fp32", whole_batch=None, rollouts_per_image=1,
                 retriever_mix="mean", micro_batch_size=None, rollout_batch_size=None):  # fmt: skip
        super().__init__()
        self.sender, self.receiver, self.loss = sender, receiver, loss
        self.baseline_type, self.standardize_advantage = baseline_type, standardize_advantage
        self.baselines = {}  # retriever -> its Baseline (one, 0, unless retriever_mix="alternate")
        if rollouts_per_image < self.baseline.min_group_size:
            raise ValueError(f"a group baseline needs rollouts_per_image of {self.baseline.min_group_size} or more")
        _check_choice("retriever mix", retriever_mix, ("mean", "alternate"))
        _check_choice("KL estimator", kl_estimator, KL_ESTIMATORS)
        _check_choice("log-probability normalization", log_prob_normalization, LOG_PROB_NORMALIZATIONS)
        if kl_coeff and kl_reference is None:
            raise ValueError("a KL penalty (kl_coeff > 0) needs a KL reference (the pretrained captioner)")
        for name, value in (("micro_batch_size", micro_batch_size), ("rollout_batch_size", rollout_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.rollouts_per_image, self.retriever_mix = rollouts_per_image, retriever_mix
        if retriever_mix == "alternate":  # whose turn it is, saved in checkpoints: a resumed run goes on in turn
            self.register_buffer("retriever_turn", torch.zeros((), dtype=torch.long))
        self.entropy_coeff = entropy_coeff
        self.kl_reference, self.kl_coeff, self.kl_estimator = kl_reference, kl_coeff, kl_estimator
        self.kl_in_baseline = kl_in_baseline
        self.log_prob_normalization = log_prob_normalization
        self.micro_batch_size, self.rollout_batch_size = micro_batch_size, rollout_batch_size
        self.last_rollouts = None
        self.precision = precision
        self.whole_batch = whole_batch or _this_batch
        self.train_logging_strategy = train_logging_strategy or core.LoggingStrategy.minimal()
        self.test_logging_strategy = test_logging_strategy or core.LoggingStrategy.minimal()
        self.register_state_dict_post_hook(_drop_frozen_parts)
        self.register_load_state_dict_pre_hook(_keep_frozen_parts)

    def forward(self, sender_input, labels, receiver_input=None, aux_input=None):
        if not self.training:
            return self._evaluation(sender_input, labels, receiver_input, aux_input)
        k = self.rollouts_per_image
        captions = self._roll_out(sender_input, labels.device.type)  # [N = B * K], image i's at i*K ... i*K + K - 1
        labels_k, aux_input_k = labels.repeat_interleave(k), _per_rollout(aux_input, k)  # [N]
        cost, aux, scores, retriever = self._cost(sender_input, captions.message, captions.text, labels_k,
                                                  receiver_input, aux_input_k)  # fmt: skip
        scored = self._scores(captions)  # [N] each: with gradients in one pass, values alone in micro-batches
        kl = None if scored.kl is None else self._normalized(scored.kl, captions.divisor)  # [N]

        def greedy_costs():  # asked for by the greedy baseline alone
            return self._greedy_cost(sender_input, labels, receiver_input, aux_input).repeat_interleave(k)

        batch = StepBatch(k, self.whole_batch, greedy_costs)
        advantage, baseline = self._advantage(cost, kl, retriever, batch)  # [N], detached
        loss = self._policy_loss(captions, scored, advantage) + cost.mean()
        self.last_rollouts = Rollouts(captions.text, labels_k, scores.detach(), aux["reward"].detach(), -advantage,
                                      aux_input_k)  # fmt: skip
        aux.update(self._logs(aux["reward"], kl, baseline, scored.entropy, captions.length))
        interaction = self.train_logging_strategy.filtered_interaction(
            sender_input=sender_input, receiver_input=receiver_input, labels=labels_k, aux_input=aux_input_k,
            message=captions.message, receiver_output=scores.detach(), message_length=captions.length, aux=aux,
        )  # fmt: skip
        if self.retriever_mix == "alternate":
            self.retriever_turn += 1
        return loss, interaction

    # ---- the training step

    def _roll_out(self, sender_input, device_type):
        bounds = [size for size in (self.micro_batch_size, self.rollout_batch_size) if size is not None]
        with autocast(self.precision, device_type):
            return self.sender.sample(sender_input, per_image=self.rollouts_per_image,
                                      images_per_decode=self.rollout_batch_size,
                                      images_per_encode=min(bounds, default=None))  # fmt: skip

    def _cost(self, sender_input, message, text, labels, receiver_input, aux_input):
        """Per-caption cost ``[N]``, the loss's aux, the (first) retriever's scores ``[N, C]`` (fp32) and the
        retriever whose reward the cost is (0 unless retriever_mix="alternate").

        With several retrievers (scores ``[R, N, C]``) the loss sees all of them (``--retriever_mix mean``) or, in
        training with ``alternate``, the one whose turn it is; each one's P@1 is logged as ``acc_retriever<i>``."""
        with full_precision(labels.device.type):
            scores = self.receiver(text, receiver_input, aux_input)  # [N, C], or [R, N, C]
            rewarded, retriever = scores, 0
            if scores.dim() == 3 and self.training and self.retriever_mix == "alternate":
                retriever = int(self.retriever_turn) % scores.shape[0]
                rewarded = scores[retriever]
            cost, aux = self.loss(sender_input, message, receiver_input, rewarded, labels, aux_input)
            if cost.shape != labels.shape:
                raise ValueError(f"the loss must return one cost per sample, shape {tuple(labels.shape)}; got "
                                 f"{tuple(cost.shape)} (does it average over the batch?)")  # fmt: skip
            if scores.dim() == 3:
                for i in range(1, scores.shape[0]):
                    aux[f"acc_retriever{i + 1}"] = strict_hits(scores[i], labels).float()
                if rewarded is not scores:  # the loss saw another retriever's: P@1 is the first retriever's
                    aux["acc"] = strict_hits(scores[0], labels).float()
                scores = scores[0]
        return cost, aux, scores, retriever

    def _scores(self, captions):
        """Every caption's ``Scores``: with gradients in one scoring pass, or, in micro-batches, their values
        alone (``_policy_loss`` recomputes them with gradients in its backward)."""
        chunks = self._chunks(len(captions.message), captions.message.device)
        if len(chunks) == 1:
            return self._score(captions, chunks[0], self.kl_reference)
        with torch.no_grad():
            parts = [self._score(captions, rows, self.kl_reference) for rows in chunks]
        return Scores(*(None if values[0] is None else torch.cat(values) for values in zip(*parts)))

    def _score(self, captions, rows, kl_reference=None):
        with autocast(self.precision, captions.message.device.type):
            return self.sender.score(captions, rows, kl_reference=kl_reference, kl_estimator=self.kl_estimator)

    def _advantage(self, cost, kl, retriever, batch):
        """``(advantage [N], baseline as logged)`` from the costs, with the KL inside the baseline's cost or added
        to the advantage after it (``kl_in_baseline``)."""
        cost = cost.detach()
        if kl is not None and self.kl_in_baseline:
            cost = cost + self.kl_coeff * kl
        advantage, baseline = self._baseline(retriever).advantages(cost, batch)
        if kl is not None and not self.kl_in_baseline:
            advantage = advantage + self.kl_coeff * kl
        return advantage, baseline

    def _policy_loss(self, captions, scored, advantage):
        """``mean(advantage * log p) - entropy_coeff * mean(entropy)`` over the rollouts, differentiable: from
        ``scored`` itself (one pass), or recomputed one micro-batch at a time in the backward."""
        n = len(advantage)
        chunks = self._chunks(n, advantage.device)
        value = self._surrogate(advantage, scored, captions.divisor) / n
        if len(chunks) == 1:
            return value

        def loss_of(rows, condition):  # rows' share, with gradients; ``condition``: a leaf standing for the prefix
            rows_captions = captions if condition is None else captions._replace(condition=condition)
            return self._surrogate(advantage[rows], self._score(rows_captions, rows), captions.divisor[rows]) / n

        parameters = [p for p in self.sender.parameters() if p.requires_grad]
        return recomputed_loss(value, loss_of, chunks, captions.condition, parameters)

    def _surrogate(self, advantage, scored, divisor):
        total = (advantage * self._normalized(scored.log_prob, divisor)).sum()
        return total - self.entropy_coeff * scored.entropy.sum() if self.entropy_coeff else total

    def _logs(self, reward, kl, baseline, entropy, length):
        """The step's per-rollout logs; with K > 1 each image's reward spread and whether its rewards all tie."""
        logs = {"baseline": baseline.float().reshape(-1).detach().clone(), "sender_entropy": entropy.detach(),
                "length": length}  # fmt: skip
        if kl is not None:
            logs["kl"] = kl
        k = self.rollouts_per_image
        if k > 1:
            groups = reward.view(-1, k)  # [B, K]
            logs["group_reward_std"] = groups.std(dim=1).repeat_interleave(k)
            logs["identical_rewards"] = (groups == groups[:, :1]).all(dim=1).float().repeat_interleave(k)
        return logs

    def _normalized(self, per_caption, divisor):
        """A caption's summed ``per_caption`` value ``[N]`` under ``log_prob_normalization`` (mean: / divisor)."""
        if self.log_prob_normalization == "mean":
            return per_caption / divisor.to(per_caption.dtype).clamp(min=1)
        return per_caption

    def _chunks(self, rows, device):
        per_chunk = rows if self.micro_batch_size is None else self.micro_batch_size * self.rollouts_per_image
        return row_chunks(rows, per_chunk, device)

    @property
    def baseline(self):
        """The (first retriever's) baseline."""
        return self._baseline(0)

    def _baseline(self, retriever):
        if retriever not in self.baselines:
            baseline = as_baseline(self.baseline_type())
            baseline.standardize = self.standardize_advantage
            self.baselines[retriever] = baseline
        return self.baselines[retriever]

    @torch.no_grad()
    def _greedy_cost(self, sender_input, labels, receiver_input, aux_input):
        greedy = self._send(sender_input, aux_input, labels.device.type, strategy="greedy", score=False)
        return self._cost(sender_input, greedy.message, greedy.text, labels, receiver_input, aux_input)[0]

    # ---- evaluation

    @torch.no_grad()
    def caption(self, sender_input, strategy="greedy"):
        """The captions (texts) of a few images, decoded in evaluation mode; for logs such as caption tables."""
        training = self.training
        self.eval()
        try:
            return self._send(sender_input, None, sender_input.device.type, strategy=strategy, score=False).text
        finally:
            self.train(training)

    def _evaluation(self, sender_input, labels, receiver_input, aux_input):
        rollout = self._send(sender_input, aux_input, labels.device.type)  # beam search, unscored
        cost, aux, scores, _ = self._cost(sender_input, rollout.message, rollout.text, labels, receiver_input,
                                          aux_input)  # fmt: skip
        aux.update(baseline=torch.zeros(1, device=cost.device), sender_entropy=rollout.entropy.detach(),
                   length=rollout.length)  # fmt: skip
        interaction = self.test_logging_strategy.filtered_interaction(
            sender_input=sender_input, receiver_input=receiver_input, labels=labels, aux_input=aux_input,
            message=rollout.message, receiver_output=scores.detach(), message_length=rollout.length, aux=aux,
        )  # fmt: skip
        if aux_input and "padding" in aux_input:
            cost, interaction = self._whole_set(aux_input["padding"], cost, interaction)
        return cost.mean(), interaction

    def _send(self, sender_input, aux_input, device_type, **strategy):
        with autocast(self.precision, device_type):
            return self.sender(sender_input, aux_input, **strategy)

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

    # ---- checkpoints

    def get_extra_state(self):
        return {"baselines": {retriever: baseline.state() for retriever, baseline in self.baselines.items()}}

    def set_extra_state(self, state):
        if "baseline" in state:  # checkpoints before one baseline per retriever
            state = {"baselines": {0: state["baseline"]}}
        for retriever, values in state["baselines"].items():
            self._baseline(retriever).load_state(values)


def _check_choice(what, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: one of {', '.join(choices)}")


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
