"""One process or torchrun/DDP: which rank we are, and the two collectives the loop needs."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

__all__ = ["Dist", "setup_distributed", "all_reduce_", "gather_objects", "unwrap_ddp"]


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None
    owns_group: bool = False  # we initialised the process group (and destroy it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Join the torchrun process group (gloo on CPU, NCCL on GPU) when ``WORLD_SIZE`` > 1."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    owns = False
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        owns = True
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return Dist(rank, world, local_rank, device, owns)


def all_reduce_(tensor, dinfo: Dist):
    """Sum ``tensor`` over ranks in place (no-op in one process); returns it."""
    if dinfo.world > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def gather_objects(obj, dinfo: Dist) -> list:
    """``obj`` of every rank, in rank order."""
    if dinfo.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * dinfo.world
    dist.all_gather_object(out, obj)
    return out


def unwrap_ddp(module):
    from torch import nn

    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
