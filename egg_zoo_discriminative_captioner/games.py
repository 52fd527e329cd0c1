"""Builds the DiscriTune game from options: captioner Sender + frozen retriever Receiver + reward loss."""

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
    """EGG's optimizer (``--optimizer``, ``--lr``, constant) over the captioner's trainable parameters only."""
    from .core import core

    return core.build_optimizer(game.sender.captioner.trainable_parameters())
