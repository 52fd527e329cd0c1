"""Precision, decided once by name (training precision is EGG's ``--fp16``; the device is EGG's ``opts.device``)."""

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_of(precision):
    """The torch dtype of a precision name ('fp32', 'fp16' or 'bf16')."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}") from None
