"""Builds the DiscriTune game from options: captioner Sender + frozen retriever Receiver + reward loss."""

import torch

from .archs import CaptionerSender, DiscriminativeGame, FrozenReference, GreedyBaseline, RetrieverReceiver
from .core import MeanBaseline, NoBaseline
from .distributed import data_parallel_game
from .losses import DiscriminationLoss
from .precision import training_precision

BASELINE_TYPES = {"mean": MeanBaseline, "none": NoBaseline, "greedy": GreedyBaseline}


def build_game(opts, captioner, retriever):
    """The game of ``opts``: rewards at ``--reward_temperature`` (the retriever's own when unset), the captioner
    in ``--precision`` (or EGG's ``--fp16``).

    In a distributed run the distractors and batch statistics span the global batch (``distributed.py``).
    """
    temperature = opts.reward_temperature if opts.reward_temperature is not None else retriever.temperature
    receiver, data_parallel_options = data_parallel_game(opts, RetrieverReceiver(retriever))
    return DiscriminativeGame(
        sender=CaptionerSender(captioner, greedy_rollouts=opts.greedy_rollouts, num_beams=opts.num_beams),
        receiver=receiver,
        loss=DiscriminationLoss(reward=opts.reward, temperature=temperature),
        baseline_type=BASELINE_TYPES[opts.baseline],
        entropy_coeff=opts.entropy_coeff,
        standardize_advantage=opts.standardize_advantage,
        reference=FrozenReference(captioner) if opts.kl_coeff > 0 else None,
        kl_coeff=opts.kl_coeff,
        precision=training_precision(opts),
        **data_parallel_options,
    )


def build_optimizer(game):
    """EGG's optimizer (``--optimizer``, ``--lr``, constant) over the captioner's trainable parameters only.

    Adam is torch's fused implementation: the same update as EGG's ``torch.optim.Adam(params, lr)`` in one
    kernel per step and no temporaries (on the CPU, one thread, 9x faster than the per-tensor loop torch uses
    by default there).
    """
    from .core import core

    parameters, opts = game.sender.captioner.trainable_parameters(), core.get_opts()
    if opts.optimizer == "adam":
        return fused_adam(parameters, lr=opts.lr)
    return core.build_optimizer(parameters)


def fused_adam(parameters, lr):
    return torch.optim.Adam(parameters, lr=lr, fused=True)
