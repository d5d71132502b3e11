"""torchrun's environment → a process group (nccl on GPUs, gloo on CPUs), shared by `vidsearch train` and `index`.

    torchrun --nproc-per-node N -m vidsearch train ...      N ranks on one machine
    torchrun --nnodes M --node-rank I --rdzv-endpoint HOST:PORT --nproc-per-node N -m vidsearch index ...

A single process (no WORLD_SIZE, or WORLD_SIZE=1) makes no process group: every helper here is then a no-op, so the
library runs the same code alone and under torchrun. Importing this module does not import torch (the CLI asks for
the rank before choosing its log level).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 alone): usable before any process group exists."""
    return int(os.environ.get("RANK", "0"))


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(*, cuda: bool | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; a process group only when there are several ranks.

    `cuda` None: a GPU per local rank when CUDA is available. `cuda=False` keeps every rank on the CPU (gloo).
    """
    import torch
    import torch.distributed as dist

    world, rank, local_rank = env_world(), env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        log.info("rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    return rank, world, device


def initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    import torch.distributed as dist

    if initialized():
        dist.barrier()


def shutdown_distributed() -> None:
    """Wait for every rank (rank 0 may still be saving), then destroy the process group; a no-op alone."""
    import torch.distributed as dist

    if initialized():
        dist.barrier()
        dist.destroy_process_group()
