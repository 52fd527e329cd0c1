"""The agents and the game: a captioner Sender, a frozen retriever Receiver, and REINFORCE between them.

``DiscriminativeGame`` follows EGG's ``SymbolGameReinforce``: the Sender emits a message (a caption), the
Receiver scores it against the candidate images, the loss turns the scores into a per-sample cost (the negative
reward), and the Sender's log-probability is pushed along the baselined reward.  Models stay pure: only the game
knows about baselines, advantages and entropy.
"""

import copy
import dataclasses

import torch
from torch import nn

from .core import MeanBaseline, core
from .errors import UsageError
from .frozen import FrozenModule
from .precision import autocast, full_precision

DECODINGS = ("sample", "greedy", "beam")


class CaptionerSender(nn.Module):
    """EGG Sender around a captioner: rollouts in training (sampled, or greedy), beam search in evaluation."""

    def __init__(self, captioner, greedy_rollouts=False, num_beams=5):
        super().__init__()
        self.captioner = captioner
        self.greedy_rollouts = greedy_rollouts
        self.num_beams = num_beams

    def forward(self, sender_input, aux_input=None, decoding=None, score=True):
        """A ``Rollout``; ``decoding`` overrides the mode's default ("sample", "greedy" or "beam").

        With ``score=False`` greedy captions are decoded without the scoring pass (zero ``log_prob``).
        """
        if decoding is None:
            decoding = ("greedy" if self.greedy_rollouts else "sample") if self.training else "beam"
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}: one of {', '.join(DECODINGS)}")
        if decoding == "beam":
            return self.captioner.generate(sender_input, num_beams=self.num_beams)
        if decoding == "greedy" and not score:
            return self.captioner.generate(sender_input, num_beams=1)
        return self.captioner.rollout(sender_input, greedy=decoding == "greedy")

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
    preprocessed pixels ``[N, 3, H, W]``.
    """

    def __init__(self, retriever):
        super().__init__()
        self.retriever = retriever

    def forward(self, message, receiver_input, aux_input=None):
        with full_precision(receiver_input.device.type):  # also under EGG's --fp16, which autocasts the game
            images = receiver_input if receiver_input.dim() == 2 else self.retriever.encode_images(receiver_input)
            texts = self.retriever.encode_texts(message).float()  # [B, D]
            return texts @ images.float().T  # [B, N]


class FrozenReference(FrozenModule):
    """A frozen copy of the pretrained captioner, scoring the policy's captions for the KL penalty (in fp32).

    Only the trainable part is copied: frozen parts (ClipCap's CLIP, BLIP's frozen vision encoder) are shared
    with the policy, so the reference reuses the image features the policy computed for the same batch.
    """

    def __init__(self, captioner):
        super().__init__()
        shared = {id(module): module for module in captioner.modules() if isinstance(module, FrozenModule)}
        self.captioner = copy.deepcopy(captioner, memo=shared)
        self.freeze()

    @torch.no_grad()
    def forward(self, sender_input, tokens):
        """Summed log-probability ``[B]`` of caption ``tokens`` under the pretrained captioner."""
        with full_precision(tokens.device.type):
            return self.captioner.score(sender_input, tokens)[0]


class GreedyBaseline:
    """Self-critical baseline: the cost of the greedy caption of the same image, computed by the game per batch."""

    def __init__(self):
        self.cost = None

    def update(self, loss):
        """Nothing to accumulate: the baseline is recomputed for every batch."""

    def predict(self, loss):
        return self.cost


class DiscriminativeGame(nn.Module):
    """REINFORCE discrimination game (DiscriTune) between a captioner Sender and a frozen retriever Receiver.

    In training the objective is ``mean((cost - b) * log p(caption)) - entropy_coeff * mean(entropy)``, where the
    baseline ``b`` comes from ``baseline_type``: an EGG baseline class such as ``MeanBaseline`` or ``NoBaseline``
    (updated in training only), or ``GreedyBaseline`` (the task cost of the greedy caption).  With a
    ``reference`` (a ``FrozenReference`` of the pretrained captioner) and ``kl_coeff`` > 0, the cost is shaped by
    ``kl_coeff * (log p(caption) - log p_ref(caption))``, a sampled estimate of the KL divergence from the
    pretrained captioner that keeps the finetuned language fluent.  ``standardize_advantage`` rescales
    ``cost - b`` to zero mean and unit variance within the batch; it removes any constant baseline, so with it a
    running-mean baseline makes no difference.  As in EGG, the returned loss also adds ``cost.mean()``, which
    carries no gradient here (the retriever is frozen) and makes the logged loss the mean negative reward.
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
        train_logging_strategy=None,
        test_logging_strategy=None,
        precision="fp32",
        whole_batch=None,
    ):
        super().__init__()
        self.sender = sender
        self.receiver = receiver
        self.loss = loss
        self.baseline = baseline_type()
        self.entropy_coeff = entropy_coeff
        self.standardize_advantage = standardize_advantage
        if kl_coeff and reference is None:
            raise ValueError("a KL penalty (kl_coeff > 0) needs the pretrained captioner as reference")
        self.reference = reference
        self.kl_coeff = kl_coeff
        self.precision = precision
        self.whole_batch = whole_batch or _this_batch
        # Image games keep logs small: the Trainer holds every batch's Interaction for a whole epoch.
        self.train_logging_strategy = train_logging_strategy or core.LoggingStrategy.minimal()
        self.test_logging_strategy = test_logging_strategy or core.LoggingStrategy.minimal()
        self.register_state_dict_post_hook(_drop_frozen_parts)
        self.register_load_state_dict_pre_hook(_keep_frozen_parts)

    def forward(self, sender_input, labels, receiver_input=None, aux_input=None):
        rollout = self._send(sender_input, labels, aux_input)
        cost, aux, scores = self._cost(sender_input, rollout, labels, receiver_input, aux_input)
        if cost.shape != labels.shape:
            raise ValueError(
                f"the loss must return one cost per sample, shape {tuple(labels.shape)}; got {tuple(cost.shape)}"
                " (does it average over the batch?)"
            )
        if self.training:
            cost_value = cost.detach()  # [B]
            if self.reference is not None:
                kl = rollout.log_prob.detach() - self.reference(sender_input, rollout.message)  # [B]
                cost_value = cost_value + self.kl_coeff * kl
                aux["kl"] = kl
            if isinstance(self.baseline, GreedyBaseline):
                self.baseline.cost = self._greedy_cost(sender_input, labels, receiver_input, aux_input)
            # A copy: upstream EGG's MeanBaseline updates the tensor it returned in place, in update() below.
            baseline = torch.as_tensor(self.baseline.predict(cost_value), device=cost.device).detach().clone()
            advantage = cost_value - baseline  # [B]
            if self.standardize_advantage:
                whole = self.whole_batch(advantage)  # [B_global]
                advantage = (advantage - whole.mean()) / (whole.std() + 1e-8)
            policy_loss = (advantage * rollout.log_prob).mean()
            entropy_loss = -self.entropy_coeff * rollout.entropy.mean() if self.entropy_coeff else 0.0
            self.baseline.update(self.whole_batch(cost_value))
        else:
            baseline = torch.zeros(1, device=cost.device)
            policy_loss = entropy_loss = torch.zeros((), device=cost.device)

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
        return policy_loss + entropy_loss + cost.mean(), interaction

    def _send(self, sender_input, labels, aux_input, **decoding):
        with autocast(self.precision, labels.device.type):
            return self.sender(sender_input, aux_input, **decoding)

    def _cost(self, sender_input, rollout, labels, receiver_input, aux_input):
        """Per-sample cost ``[B]``, the loss's aux and the receiver's scores ``[B, N]``, in fp32."""
        with full_precision(labels.device.type):
            scores = self.receiver(rollout.text, receiver_input, aux_input)  # [B, N]
            cost, aux = self.loss(sender_input, rollout.message, receiver_input, scores, labels, aux_input)
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
