"""Command-line options, seeding and small helpers, compatible with ``egg.core.util``."""

import argparse
import random
import sys
from typing import Any, Iterable, List, Optional

import numpy as np
import torch

from .distributed import DistributedContext, maybe_init_distributed  # noqa: F401 (upstream names)
from .options import NEEDS_EGG as _NEEDS_EGG
from .options import add_common_options

_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}

# Module state, as in upstream: the Trainer and build_optimizer read what the last init() parsed.
_common_opts: Optional[argparse.Namespace] = None
_optimizer_class = None


def _reject_unsupported(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Exit with a one-line usage error for the features only upstream EGG provides."""
    if opts.tensorboard:
        parser.error(f"--tensorboard {_NEEDS_EGG}")


def _set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def init(
    arg_parser: Optional[argparse.ArgumentParser] = None, params: Optional[List[str]] = None
) -> argparse.Namespace:
    """Add the common options to ``arg_parser``, parse ``params`` (``sys.argv[1:]`` when None) and seed.

    An empty ``params`` list means defaults only.  Must run before a Trainer is built.
    """
    global _common_opts, _optimizer_class

    parser = arg_parser if arg_parser is not None else argparse.ArgumentParser()
    add_common_options(parser)
    opts = parser.parse_args(sys.argv[1:] if params is None else params)
    _reject_unsupported(parser, opts)

    opts.cuda = not opts.no_cuda and torch.cuda.is_available()
    opts.no_cuda = not opts.cuda
    opts.device = torch.device("cuda" if opts.cuda else "cpu")
    opts.distributed_context = maybe_init_distributed(opts)

    if opts.random_seed is None:
        opts.random_seed = random.randint(0, 2**31)
    else:  # as upstream: each rank draws its own random numbers (rank 0 keeps the given seed)
        opts.random_seed += opts.distributed_context.rank
    _set_seed(opts.random_seed)

    if opts.optimizer not in _OPTIMIZERS:
        raise NotImplementedError(f"Unknown optimizer name {opts.optimizer}!")
    if opts.update_freq <= 0:
        raise RuntimeError("update_freq should be an integer, >= 1.")

    _optimizer_class = _OPTIMIZERS[opts.optimizer]
    _common_opts = opts
    return opts


def get_opts() -> Optional[argparse.Namespace]:
    """The options parsed by the last ``init`` call (None before any)."""
    return _common_opts


def build_optimizer(params: Iterable) -> torch.optim.Optimizer:
    """The ``--optimizer`` class over ``params`` with ``--lr``; no other hyperparameters, as upstream."""
    return _optimizer_class(params, lr=get_opts().lr)


def close() -> None:
    """Release what ``init`` opened; the compat core opens no TensorBoard writer, so there is nothing to do."""


def move_to(x: Any, device: torch.device) -> Any:
    """Move ``x`` to ``device`` recursively.

    Anything with ``.to`` is moved, lists and tuples come back as lists, dicts are updated in place, and
    other values are returned unchanged.
    """
    if hasattr(x, "to"):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return [move_to(item, device) for item in x]
    if isinstance(x, dict):
        for key, value in x.items():
            x[key] = move_to(value, device)
        return x
    return x
