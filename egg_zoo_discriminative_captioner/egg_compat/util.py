"""Command-line options, seeding and small helpers, compatible with ``egg.core.util``."""

import argparse
import random
import sys
from typing import Any, Iterable, List, Optional

import numpy as np
import torch

from .distributed import DistributedContext, maybe_init_distributed  # noqa: F401 (upstream names)

_NEEDS_EGG = "needs facebookresearch EGG (pip install from its git repository)"
_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}

# Module state, as in upstream: the Trainer and build_optimizer read what the last init() parsed.
_common_opts: Optional[argparse.Namespace] = None
_optimizer_class = None


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add upstream EGG's common options, with its exact names, types and defaults."""
    parser.add_argument("--random_seed", type=int, default=None, help="Random seed (default: drawn at random)")
    parser.add_argument("--checkpoint_dir", type=str, default=None, help="Where checkpoints are stored")
    parser.add_argument(
        "--preemptable",
        default=False,
        action="store_true",
        help="Resume from the newest checkpoint of <checkpoint_dir>/<SLURM job>_<task> (with the automatic saver)",
    )
    parser.add_argument(
        "--checkpoint_freq", type=int, default=0, help="Save a checkpoint every k epochs; 0: only final.tar"
    )
    parser.add_argument("--validation_freq", type=int, default=1, help="Validate every k epochs (default: 1)")
    parser.add_argument("--n_epochs", type=int, default=10, help="Number of epochs to train (default: 10)")
    parser.add_argument(
        "--load_from_checkpoint",
        type=str,
        default=None,
        help="Load model, optimizer and epoch from this checkpoint file (default: None)",
    )
    parser.add_argument("--no_cuda", default=False, action="store_true", help="Disable CUDA")
    parser.add_argument("--batch_size", type=int, default=32, help="Batch size (default: 32)")
    parser.add_argument("--optimizer", type=str, default="adam", help="Optimizer: adam, sgd or adagrad (default: adam)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Learning rate (default: 1e-2)")
    parser.add_argument("--update_freq", type=int, default=1, help="Update the weights every k batches (default: 1)")
    parser.add_argument("--vocab_size", type=int, default=10, help="Channel vocabulary size (default: 10)")
    parser.add_argument("--max_len", type=int, default=1, help="Maximal message length (default: 1)")
    parser.add_argument("--tensorboard", default=False, action="store_true", help=f"TensorBoard logging ({_NEEDS_EGG})")
    parser.add_argument("--tensorboard_dir", type=str, default="runs/", help="TensorBoard log directory")
    parser.add_argument("--distributed_port", type=int, default=18363, help="Port for SLURM-launched distributed runs")
    parser.add_argument("--fp16", default=False, action="store_true", help="Mixed-precision training (CUDA only)")


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
    _add_common_options(parser)
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
