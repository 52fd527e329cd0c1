"""A small EGG-compatible core, used only when facebookresearch EGG (``egg.core``) is not importable.

It offers the subset of ``egg.core`` the plugin uses, with upstream's names, signatures, console output and
checkpoint file names, single-process or data-parallel (torchrun or SLURM, gloo on the CPU, NCCL on GPUs:
``distributed.py``), plus the upstream callbacks a researcher is likely to add (``InteractionSaver``,
``EarlyStopperAccuracy``).  ``--tensorboard`` needs the real EGG.  ``core.py`` picks between the two; the plugin
reaches either one only through it.
"""

from .batch import Batch
from .callbacks import Callback, CheckpointSaver, ConsoleLogger, InteractionSaver
from .early_stopping import EarlyStopperAccuracy
from .interaction import Interaction, LoggingStrategy
from .trainers import Trainer
from .util import build_optimizer, close, get_opts, init, move_to

__all__ = [
    "init",
    "get_opts",
    "build_optimizer",
    "close",
    "move_to",
    "Trainer",
    "Interaction",
    "LoggingStrategy",
    "Callback",
    "ConsoleLogger",
    "CheckpointSaver",
    "InteractionSaver",
    "EarlyStopperAccuracy",
    "Batch",
]
