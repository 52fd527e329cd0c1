"""A small EGG-compatible core, used only when facebookresearch EGG (``egg.core``) is not importable.

It offers the subset of ``egg.core`` the plugin uses, with upstream's names, signatures, console output and
checkpoint file names, single-process or data-parallel (torchrun or SLURM, gloo on the CPU, NCCL on GPUs:
``distributed.py``), plus the upstream callbacks a researcher is likely to add (``InteractionSaver``,
``EarlyStopperAccuracy``).  ``--tensorboard`` needs the real EGG.  ``core.py`` picks between the two; the plugin
reaches either one only through it.
"""

import importlib

# Upstream's names, each loaded from its module on first use (PEP 562), so that ``options`` imports without torch.
_EXPORTS = {
    "Batch": ".batch", "Callback": ".callbacks", "CheckpointSaver": ".callbacks", "ConsoleLogger": ".callbacks",
    "InteractionSaver": ".callbacks", "EarlyStopperAccuracy": ".early_stopping", "Interaction": ".interaction",
    "LoggingStrategy": ".interaction", "Trainer": ".trainers", "build_optimizer": ".util", "close": ".util",
    "get_opts": ".util", "init": ".util", "move_to": ".util",
}  # fmt: skip


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], package=__name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
