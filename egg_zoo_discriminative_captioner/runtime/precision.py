"""Precision, decided once by name: ``--precision fp32|bf16|fp16`` (EGG's ``--fp16`` is ``--precision fp16``).

The captioner's passes (sampling, scoring, beam search) run under autocast in the training precision; the
retriever's scores, the reward and the KL reference always run in fp32, with autocast switched off, also when
EGG's Trainer autocasts the whole game under ``--fp16``.  fp16 needs a GradScaler, which EGG's Trainer keeps when
``opts.fp16`` is set; bf16 needs none.
"""

import contextlib

import torch

from .. import choices
from .errors import UsageError

PRECISIONS = {name: {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
              for name in choices.PRECISIONS}  # fmt: skip


def dtype_of(precision):
    """The torch dtype of a precision name ('fp32', 'fp16' or 'bf16')."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}") from None


def training_precision(opts):
    """The run's precision from ``--precision`` and EGG's ``--fp16`` (fp16 also needs EGG's GradScaler, which
    EGG's Trainer takes from its own ``fp16`` option: ``train.py`` hands it over).

    EGG's ``--fp16`` on a CPU device trains in fp32 (EGG's Trainer warns); ``--precision fp16`` there is an error.
    """
    precision = opts.precision
    on_cuda = torch.device(opts.device).type == "cuda"
    if opts.fp16:
        if precision == "bf16":
            raise UsageError("--fp16 is EGG's name for --precision fp16: it cannot be combined with --precision bf16")
        precision = "fp16" if on_cuda else "fp32"
    if precision == "fp16":
        if not on_cuda:
            raise UsageError("--precision fp16 needs a CUDA device (and its GradScaler); use bf16 on the CPU")
    return precision


def autocast(precision, device_type):
    """The captioner's autocast context for ``precision`` on ``device_type`` (none for fp32)."""
    if dtype_of(precision) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype_of(precision))


def full_precision(device_type):
    """Autocast switched off: the retriever, the reward and the KL reference compute in fp32 under any precision."""
    return torch.autocast(device_type, enabled=False)
