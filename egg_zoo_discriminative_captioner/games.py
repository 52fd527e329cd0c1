"""Builds the DiscriTune game from the run config: captioner Sender + frozen retriever Receiver + reward loss."""

import functools

import torch

from .archs import CaptionerSender, DiscriminativeGame, RetrieverReceiver
from .baselines import GreedyBaseline, GroupBaseline
from .core import MeanBaseline, NoBaseline
from .kl_references import FrozenReference, LanguageModelReference
from .losses import DiscriminationLoss
from .runtime.distributed import data_parallel_game
from .runtime.errors import UsageError
from .runtime.precision import training_precision

BASELINE_TYPES = {
    "mean": MeanBaseline,
    "none": NoBaseline,
    "greedy": GreedyBaseline,
    "rloo": functools.partial(GroupBaseline, leave_one_out=True),
    "group": functools.partial(GroupBaseline, leave_one_out=False),
}


def build_game(opts, captioner, retriever, extra_retrievers=()):
    """The game of ``opts``: rewards at ``--reward_temperature`` (the retriever's own when unset), the captioner
    in ``--precision`` (or EGG's ``--fp16``); ``extra_retrievers`` reward it too (``--retriever_mix``).

    In a distributed run the distractors and batch statistics span the global batch (``runtime/distributed.py``).
    """
    temperature = opts.reward_temperature if opts.reward_temperature is not None else retriever.temperature
    receiver, data_parallel_options = data_parallel_game(opts, RetrieverReceiver(retriever, extra_retrievers))
    return DiscriminativeGame(
        sender=CaptionerSender(captioner, num_beams=opts.num_beams, rollouts=opts.rollouts),
        receiver=receiver,
        loss=DiscriminationLoss(reward=opts.reward, temperature=temperature),
        baseline_type=BASELINE_TYPES[opts.baseline],
        entropy_coeff=opts.entropy_coeff,
        standardize_advantage=opts.standardize_advantage,
        kl_reference=build_kl_reference(opts, captioner) if opts.kl_coeff > 0 else None,
        kl_coeff=opts.kl_coeff,
        kl_estimator=opts.kl_estimator,
        kl_in_baseline=opts.kl_in_baseline,
        log_prob_normalization=opts.log_prob_normalization,
        precision=training_precision(opts),
        rollouts_per_image=opts.rollouts_per_image,
        retriever_mix=opts.retriever_mix,
        micro_batch_size=opts.micro_batch_size,
        rollout_batch_size=opts.rollout_batch_size,
        **data_parallel_options,
    )


def build_kl_reference(opts, captioner):
    """The frozen KL reference of ``--kl_reference``: a copy of the pretrained captioner (this project's), or
    the plain language model of ``--language_model`` (the authors'), never trained and left out of checkpoints."""
    if opts.kl_reference == "captioner":
        return FrozenReference(captioner)
    from .captioners.clipcap import ClipCapCaptioner
    from .captioners.clipcap_checkpoint import load_pretrained_language_model

    if not isinstance(captioner, ClipCapCaptioner):  # BLIP's decoder reads the image in every layer
        raise UsageError("--kl_reference language_model needs --captioner clipcap (its GPT-2 is a language model)")
    language_model = load_pretrained_language_model(opts.language_model)
    bos_id = language_model.config.bos_token_id
    if bos_id is None:
        bos_id = captioner.tokenizer.bos_token_id
    reference = LanguageModelReference(language_model, bos_id, captioner.stop_ids)
    vocabulary, own = reference.lm_head.weight.shape[0], captioner.lm_head.weight.shape[0]
    if vocabulary != own:
        raise UsageError(f"--language_model {opts.language_model} has a vocabulary of {vocabulary} tokens, the "
                         f"captioner {own}: the KL reference must be the captioner's own GPT-2")  # fmt: skip
    return reference.to(captioner.lm_head.weight.device)


def build_optimizer(opts, game):
    """EGG's optimizer (``--optimizer``, ``--lr``, constant) over the captioner's trainable parameters only.

    Adam is torch's fused implementation: the same update as EGG's ``torch.optim.Adam(params, lr)`` in one
    kernel per step and no temporaries (on the CPU, one thread, 9x faster than the per-tensor loop torch uses
    by default there); SGD and Adagrad are EGG's, built from the run's config rather than EGG's global options.
    """
    optimizers = {"adam": fused_adam, "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}
    return optimizers[opts.optimizer](game.sender.captioner.trainable_parameters(), lr=opts.lr)


def fused_adam(parameters, lr):
    return torch.optim.Adam(parameters, lr=lr, fused=True)


class PerUpdateScheduler:
    """A learning-rate schedule that advances after every optimizer update, handed to EGG's Trainer.

    EGG's Trainer steps its ``optimizer_scheduler`` once per epoch, and saves and restores its state with every
    checkpoint; here the Trainer's ``step()`` does nothing, and the optimizer's own step hook advances the
    schedule, so the learning rate follows the updates and a resumed run goes on where it stopped.
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler
        scheduler.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: scheduler.step())

    def step(self):
        """EGG's end-of-epoch call: the schedule advances with each update instead."""

    def get_last_lr(self):
        return self.scheduler.get_last_lr()

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)


def build_scheduler(opts, optimizer, updates_per_epoch):
    """The learning-rate schedule of ``--lr_scheduler`` after ``--warmup_steps`` (transformers' schedules, by
    optimizer update), over the run's ``--n_epochs`` x ``updates_per_epoch`` updates; None for a constant
    learning rate without warm-up (the paper's)."""
    from transformers import get_scheduler

    if opts.lr_scheduler == "constant" and not opts.warmup_steps:
        return None
    name = "constant_with_warmup" if opts.lr_scheduler == "constant" else opts.lr_scheduler
    total = opts.n_epochs * updates_per_epoch
    return PerUpdateScheduler(get_scheduler(name, optimizer, num_warmup_steps=opts.warmup_steps,
                                            num_training_steps=total))  # fmt: skip
