"""One process, torchrun, or a Slurm step over several nodes: which rank we are, how the global batch is
spread over the ranks, and the collectives the loop needs.

Launchers: ``torchrun`` (and submitit's ``TorchDistributedEnvironment``) export ``RANK`` /
``WORLD_SIZE`` / ``MASTER_ADDR``; a bare ``srun`` exports only Slurm's variables, which
:func:`slurm_environment` turns into the same ones (rendezvous on the step's first node). The backend
is NCCL where the node has GPUs, else gloo (``dist_backend`` forces one; NCCL on a node without GPUs is
a user error, raised before anything is trained).

Batches: ``batch_size`` (global, what is trained) = ranks x ``micro_batch_size`` x accumulation steps
(:func:`batch_plan`). A run keeps its micro-batch for life, so it may resume on another number of ranks:
the accumulation steps make up the difference.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
import zlib
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn

from ..config import DistBackend, TrainConfig
from ..errors import UserError

__all__ = ["Dist", "BatchPlan", "setup_distributed", "batch_plan", "launch_world", "launch_rank", "slurm_environment",
           "first_host", "all_reduce_", "broadcast_", "gather_objects", "unwrap_ddp"]

_SLURM_PORT_RANGE = (20000, 60000)  # unprivileged, away from the ephemeral range most kernels hand out


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # on CUDA, the index of this rank's GPU among those the process sees
    device: Any = None
    owns_group: bool = False  # we initialised the process group (and destroy it at the end)
    nodes: int = 1  # machines the ranks run on

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How one optimizer update's ``batch_size`` images are spread: ``world`` ranks, each running
    ``accumulation`` forward/backward passes of ``micro_batch_size`` images."""

    batch_size: int
    world: int
    micro_batch_size: int
    accumulation: int

    @property
    def per_rank(self) -> int:
        return self.micro_batch_size * self.accumulation


def batch_plan(batch_size: int, world: int, micro_batch_size: int | None) -> BatchPlan:
    """The :class:`BatchPlan` of a global ``batch_size`` on ``world`` ranks; ``micro_batch_size`` None: one pass
    of ``batch_size / world`` per rank. Raises UserError (naming the world sizes that do fit) otherwise."""
    if micro_batch_size is None:
        if batch_size % world:
            divisors = [w for w in range(1, batch_size + 1) if batch_size % w == 0]
            near = sorted({max(w for w in divisors if w < world), min((w for w in divisors if w > world),
                                                                        default=batch_size)})
            raise UserError(f"batch_size {batch_size} is not divisible by the {world} processes; run on "
                            f"{' or '.join(map(str, near))} processes")
        return BatchPlan(batch_size, world, batch_size // world, 1)
    slots = batch_size // micro_batch_size if batch_size % micro_batch_size == 0 else 0
    if slots == 0 or slots % world:
        fits = [w for w in range(1, slots + 1) if slots % w == 0] if slots else []
        hint = f"it fits {', '.join(map(str, fits))} processes" if fits else "it must divide batch_size"
        raise UserError(f"batch_size {batch_size} cannot be split over {world} processes in micro-batches of "
                        f"{micro_batch_size} (batch_size = processes x micro_batch_size x accumulation steps); "
                        f"{hint}")
    return BatchPlan(batch_size, world, micro_batch_size, slots // world)


# ---------------------------------------------------------------------- launchers
def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``"gpu[07-09,12],cpu3"`` -> ``"gpu07"`` (Slurm's hostlist order)."""
    text = nodelist.strip()
    if not text:
        raise UserError("empty Slurm node list: cannot tell the rendezvous node")
    depth, end = 0, len(text)
    for i, ch in enumerate(text):  # the first top-level entry (commas inside [] separate ranges)
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    # Every bracket group of the entry contributes its first value ("n[1-2]r[3-4]" -> "n1r3").
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0], text[:end])


def slurm_environment(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` for a process of a
    multi-task ``srun`` step (None outside one, or with one task).

    Read from the step's variables (``SLURM_STEP_NUM_TASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``,
    ``SLURM_STEP_NODELIST``), not the job's: a batch script's own process is not a rank. The port is
    derived from the job and step ids, so every task of the step picks the same one and two steps of a
    job do not collide; ``MASTER_PORT`` set by the user wins.
    """
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    except ValueError:
        return None
    if world <= 1 or "SLURM_PROCID" not in env:
        return None
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    low, high = _SLURM_PORT_RANGE
    key = f"{env.get('SLURM_JOB_ID', '0')}.{env.get('SLURM_STEP_ID', '0')}".encode()
    port = env.get("MASTER_PORT") or str(low + zlib.crc32(key) % (high - low))
    nodes = int(env.get("SLURM_STEP_NUM_NODES", "1") or 1)
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(world), "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(max(world // max(nodes, 1), 1)), "GROUP_RANK": env.get("SLURM_NODEID", "0"),
            "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodelist), "MASTER_PORT": port}


def launch_world(environ: Mapping[str, str] | None = None) -> int:
    """The number of processes this launch starts: torchrun's ``WORLD_SIZE``, else the Slurm step's tasks, else 1."""
    env = os.environ if environ is None else environ
    if env.get("WORLD_SIZE"):
        return max(int(env["WORLD_SIZE"]), 1)
    slurm = slurm_environment(env)
    return int(slurm["WORLD_SIZE"]) if slurm else 1


def launch_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank before the process group exists: torchrun's ``RANK``, else the Slurm step's, else 0."""
    env = os.environ if environ is None else environ
    if env.get("RANK"):
        return int(env["RANK"])
    slurm = slurm_environment(env)
    return int(slurm["RANK"]) if slurm else 0


def _backend(cfg: TrainConfig | None, local_rank: int) -> str:
    """``nccl`` or ``gloo`` for this node; UserError for NCCL without a GPU for this rank."""
    wanted = cfg.dist_backend if cfg is not None else DistBackend.AUTO
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted is DistBackend.GLOO:
        return "gloo"
    if wanted is DistBackend.NCCL and gpus == 0:
        raise UserError(f"dist_backend nccl needs a GPU on every node; node {socket.gethostname()} has none "
                        f"(use dist_backend gloo for CPU nodes, or ask Slurm for GPU nodes)")
    if gpus > 1 and local_rank >= gpus:  # one visible GPU: the launcher bound one to each task
        raise UserError(f"node {socket.gethostname()} has {gpus} GPU(s) but runs local rank {local_rank}; "
                        f"start at most {gpus} processes per node (tasks per node = GPUs per node)")
    return "nccl" if gpus else "gloo"


def setup_distributed(cfg: TrainConfig | None = None) -> Dist:
    """Join the process group (torchrun's or a Slurm step's) when there are several processes."""
    if not os.environ.get("WORLD_SIZE"):
        slurm = slurm_environment()
        if slurm is not None:
            os.environ.update(slurm)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    backend = _backend(cfg, local_rank) if world > 1 else None
    # This rank's GPU: its local rank among the node's GPUs, or the one GPU a per-task binding left visible.
    gpu = (local_rank if torch.cuda.device_count() > 1 else 0) if torch.cuda.is_available() else None
    if world > 1 and not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(gpu)
        dist.init_process_group(backend)
        owns = True
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device("cuda", gpu) if gpu is not None else torch.device("cpu")
    dinfo = Dist(rank, world, gpu if gpu is not None else local_rank, device, owns)
    # A node: a host, told apart by the launcher's node rank (two "nodes" may share a host in tests).
    node = (socket.gethostname(), os.environ.get("GROUP_RANK") or os.environ.get("SLURM_NODEID") or "0")
    dinfo.nodes = len(set(gather_objects(node, dinfo)))
    return dinfo


# ---------------------------------------------------------------------- collectives
def all_reduce_(tensor, dinfo: Dist):
    """Sum ``tensor`` over ranks in place (no-op in one process); returns it."""
    if dinfo.world > 1:
        dist.all_reduce(tensor)
    return tensor


def broadcast_(tensors: list, dinfo: Dist, src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s (one collective per dtype)."""
    if dinfo.world == 1 or not tensors:
        return
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.broadcast(flat, src)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def gather_objects(obj, dinfo: Dist) -> list:
    """``obj`` of every rank, in rank order."""
    if dinfo.world == 1:
        return [obj]
    out = [None] * dinfo.world
    dist.all_gather_object(out, obj)
    return out


def unwrap_ddp(module):
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
