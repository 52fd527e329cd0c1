"""Distributed set-up, compatible with ``egg.core.distributed``: torchrun or SLURM starts the process group.

Detection follows upstream: the five variables torchrun sets (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``) mean a launched run; otherwise SLURM's task variables with more than one task mean a
SLURM run, whose leader is the job's first node and whose port is ``--distributed_port``.  Unlike upstream,
which hard-codes NCCL, the backend is NCCL when CUDA is used and gloo otherwise, so CPU runs work too.
"""

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

LAUNCH_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")
SLURM_KEYS = ("SLURM_LOCALID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODEID", "SLURM_JOB_NODELIST")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a distributed run (one process: rank 0 of 1, mode "none")."""

    is_distributed: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    mode: str = "none"  # "none", "launch" (torchrun) or "slurm"

    @property
    def is_leader(self) -> bool:
        """True on the process that logs and saves checkpoints."""
        return self.rank == 0


def _slurm_leader_address() -> str:
    """The first host of the SLURM job, where rank 0 runs."""
    hostnames = subprocess.check_output(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]])
    return hostnames.split()[0].decode("utf-8")


def maybe_init_distributed(opts) -> DistributedContext:
    """Start the process group when torchrun or a multi-task SLURM job launched this process.

    ``opts.cuda`` picks the backend (NCCL on GPUs, gloo on the CPU); ``opts.distributed_port`` is the SLURM
    rendezvous port.  A run that is already part of a process group (e.g. started by a test) keeps it.
    """
    if all(key in os.environ for key in LAUNCH_KEYS):
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank, mode = int(os.environ["LOCAL_RANK"]), "launch"
    elif all(key in os.environ for key in SLURM_KEYS) and int(os.environ["SLURM_NTASKS"]) > 1:
        rank, world_size = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local_rank, mode = int(os.environ["SLURM_LOCALID"]), "slurm"
        os.environ["MASTER_ADDR"] = _slurm_leader_address()
        os.environ["MASTER_PORT"] = str(opts.distributed_port)
        os.environ["WORLD_SIZE"], os.environ["RANK"] = str(world_size), str(rank)
    else:
        return DistributedContext()
    if opts.cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        backend = "nccl" if opts.cuda else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank)
    return DistributedContext(True, rank, local_rank, world_size, mode)


def gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` (same shape on each) along the first dimension, on this device.

    NCCL needs CUDA tensors and gloo CPU ones, so the tensor travels on the backend's device and comes back.
    """
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    local = tensor.detach().contiguous().to(device)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return torch.cat(parts, dim=0).to(tensor.device)

