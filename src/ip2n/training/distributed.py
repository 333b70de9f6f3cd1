"""Data-parallel training on torch.distributed: `torchrun` sets the environment, we join the group.

NCCL on CUDA devices, gloo on CPU. Multi-node runs use torchrun's usual flags (--nnodes,
--node-rank, --rdzv-endpoint); nothing here depends on the number of machines.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ip2n.devices import default_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a tensor over all processes (the tensor itself when alone)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, …).

    Without those variables this is a single-process run. `device` None picks the local CUDA device
    when there is one, else the CPU; each process of a multi-GPU node uses cuda:LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = default_device().type  # the rule EditPipeline.from_pretrained follows too
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device(target.type, local_rank)
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        logger.info("joined process group: rank %d of %d (%s) on %s", rank, world_size, backend, target)
    return DistributedContext(rank=rank, world_size=world_size, device=target)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
