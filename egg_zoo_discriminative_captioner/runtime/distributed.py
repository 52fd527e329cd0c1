"""Data-parallel finetuning over several processes (launched by torchrun or SLURM), on either EGG core.

The core's ``init`` starts the process group and sets ``opts.distributed_context`` (facebookresearch EGG: NCCL,
so GPUs only; the bundled core: NCCL on GPUs, gloo on the CPU), and its Trainer wraps the game in
``DistributedDataParallel``.  What the game itself needs is here:

- ``--batch_size`` is the **global** batch.  Each rank captions its contiguous share of every global batch
  (``data.samplers.EpochBatchSampler``), and the batch's ``labels`` index the targets among the global batch's
  candidates (``rank * share + arange(share)``).
- In-batch distractors span the global batch, as on one process: the retriever is frozen, so the candidates'
  image embeddings are all-gathered without gradient and each rank scores its own captions against all
  B_global candidates (``GlobalBatchReceiver``).  A caption's reward depends only on its own row of scores, so
  its text embedding never needs to leave its rank.  Rewards are then exactly the single-process ones.  With
  hard distractors, each target's neighbour embeddings come with its rank's share of the batch, and the batch's
  image indices are gathered with the embeddings to find the in-batch copies of a target's neighbours.
- Each rank back-propagates the mean over its share; the shares are equal, so DDP's gradient average is the
  gradient of the global mean, as on one process.
- Batch statistics see the global batch: the running-mean baseline is updated with every rank's costs (so all
  ranks hold the same baseline, equal to the single-process one), and ``--standardize_advantage`` uses the
  global batch's mean and standard deviation.
- Checkpoints: every rank runs the checkpoint callback, the leader alone writes.  The ranks agree after each
  update whether a signal has come to any of them (``max_over_ranks``), so all stop at the same update, and each
  checkpoint gathers every rank's random states (``gather_objects``), which each rank restores on resume.
- Evaluation is split too.  Each candidate set of the retrieval protocol is one batch: every rank loads the set's C
  candidates (cached retriever embeddings) and captions a contiguous share of ceil(T / W) of its T targets, W being
  the number of ranks (``data.retrieval_loader``); shares that come up short are filled with copies of the set's
  first target, flagged as ``padding`` in ``aux_input``, at most W - 1 extra captions per set.  Captions are scored
  against the set's candidates on their own rank.  The game then gathers the shares' per-target costs and logs,
  drops the padding rows and returns on every rank the whole set's loss and logs, in the set's order: what one
  process computes (``DiscriminativeGame``).  So no callback ever sees a padding row, and the loss a Trainer logs
  (upstream: the leader's; the bundled core: the ranks' mean, in float64) is the single-process loss.  The Trainer's
  gathering of logs holds one identical copy per rank, so P@1 and the other logged means are the single-process
  values: P@1 and the loss to the bit wherever the per-caption scores are (beam search over a share may round
  differently from beam search over a whole set), means of non-integer values such as ``reward`` up to float32
  rounding (the copies are summed in another order).
"""

import contextlib
import dataclasses
import gc
import os

import torch
import torch.distributed as dist
from torch import nn

from ..core import USING_EGG, core
from ..egg_compat.distributed import LAUNCH_KEYS, SLURM_KEYS, gather_tensor
from .errors import UsageError


def launched():
    """True when torchrun or a multi-task SLURM job started this process (what both cores detect)."""
    if all(key in os.environ for key in LAUNCH_KEYS):
        return True
    return all(key in os.environ for key in SLURM_KEYS) and int(os.environ["SLURM_NTASKS"]) > 1


def check_launch(params):
    """Before the core starts the process group: facebookresearch EGG hard-codes NCCL, which needs GPUs."""
    if USING_EGG and launched() and (not torch.cuda.is_available() or "--no_cuda" in (params or [])):
        raise UsageError(
            "distributed training on facebookresearch EGG needs GPUs (EGG always uses NCCL); "
            "on the CPU, run without EGG installed: the bundled core uses gloo"
        )


def rank_device(opts):
    """This rank's device: on GPUs, a rank of a data-parallel run has its own, made current here (before any
    model is built); otherwise the core's."""
    context = opts.distributed_context
    if not context.is_distributed or torch.device(opts.device).type != "cuda":
        return opts.device
    torch.cuda.set_device(context.local_rank)
    return torch.device("cuda", context.local_rank)


def setup(opts):
    """Returns the seed shared by all ranks (a no-op in a single-process run).

    Each rank draws its own random numbers (EGG adds the rank to ``--random_seed``; a drawn seed differs per
    rank), but the data order must be the same everywhere: the shared seed is the leader's.
    """
    context = opts.distributed_context
    if not context.is_distributed:
        return opts.random_seed
    if opts.batch_size % context.world_size:  # every rank takes an equal share of each global batch
        raise UsageError(
            f"--batch_size {opts.batch_size} must be divisible by the number of processes {context.world_size}"
        )
    seed = torch.tensor([opts.random_seed], dtype=torch.long, device=_backend_device())
    dist.broadcast(seed, src=0)
    return int(seed.item())


def _backend_device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def leader_first(opts):
    """The leader runs the block first (e.g. building a shared cache), the other ranks once it is done."""
    context = opts.distributed_context
    if context.is_distributed and not context.is_leader:
        dist.barrier()
    try:
        yield
    finally:
        if context.is_distributed and context.is_leader:
            dist.barrier()  # even on failure, so the others go on and fail with the same error


def close(trainer=None):
    """Leaves the process group at the end of a run (a no-op in a single-process run).

    The Trainer's ``DistributedDataParallel`` wrapper keeps the process group alive (its reducer holds it), and the
    Trainer sits in a reference cycle with its callbacks: left to the interpreter's exit, the group went down
    whenever that cycle was collected, and a finished run aborted now and then ("terminate called without an
    active exception").  So the wrapper is dropped and collected first, every rank waits for the others to be done
    with their collectives, and the group is torn down here.
    """
    if not is_initialized():
        return
    if trainer is not None and isinstance(trainer.game, nn.parallel.DistributedDataParallel):
        trainer.game = trainer.game.module
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size():
    """``(rank, world size)`` of this process: ``(0, 1)`` outside a process group."""
    return (dist.get_rank(), dist.get_world_size()) if is_initialized() else (0, 1)


def max_over_ranks(value):
    """The largest of every rank's integer ``value`` (a collective: every rank calls it at the same point);
    ``value`` itself in a single-process run."""
    if not is_initialized():
        return value
    reduced = torch.tensor([value], dtype=torch.long, device=_backend_device())
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return int(reduced.item())


def gather_objects(value):
    """Every rank's picklable ``value``, in rank order (a collective); ``[value]`` in a single-process run."""
    if not is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def barrier():
    if is_initialized():
        dist.barrier()


def all_gather(values):
    """Every rank's ``values`` ``[B_local, ...]`` concatenated in rank order, ``[B_global, ...]``, without
    gradient; the values themselves in a single-process run."""
    if not is_initialized():
        return values
    return gather_tensor(values)


class GlobalBatchReceiver(nn.Module):
    """Wraps a ``RetrieverReceiver`` so that this rank's captions are scored against the global batch.

    ``receiver_input`` holds this rank's share of the candidates (embeddings ``[B_local, D]`` or pixels);
    the output is ``[B_local, B_global]`` cosine similarities, candidates in rank order.
    """

    def __init__(self, receiver):
        super().__init__()
        self.receiver = receiver

    def forward(self, message, receiver_input, aux_input=None):
        if not self.training:  # evaluation: every rank holds the whole candidate set (see the module docstring)
            return self.receiver(message, receiver_input, aux_input)
        images = receiver_input
        if images.dim() != 2:  # pixels: each rank encodes its own share once
            images = self.receiver.retriever.encode_images(images)  # [B_local, D]
        if aux_input is not None and "neighbour_images" in aux_input:  # hard distractors: which images the batch has
            local = aux_input.get("candidate_index", aux_input["image_index"])  # [B_local] (K rollouts: per image)
            aux_input = {**aux_input, "candidate_index": all_gather(local)}  # [B_global]
        return self.receiver(message, all_gather(images), aux_input)  # [B_local, B_global] (+ k, hard distractors)


def data_parallel_game(opts, receiver):
    """The receiver and the extra game arguments of a distributed run (the receiver alone otherwise).

    The logs keep ``labels``: facebookresearch EGG's gathering of logs needs one sized field to check.
    """
    if not opts.distributed_context.is_distributed:
        return receiver, {}
    strategy = dataclasses.replace(core.LoggingStrategy.minimal(), store_labels=True)
    options = dict(whole_batch=all_gather, train_logging_strategy=strategy, test_logging_strategy=strategy)
    return GlobalBatchReceiver(receiver), options
