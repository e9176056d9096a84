"""The training batch sampler: seeded, sharded across ranks, with an exact real/generated split.

Every step, each rank gets ``accumulation`` micro-batches of ``batch_size`` indices:
``n_generated = round(fraction * batch_size)`` from the generated data and the rest from the real
data (Carmon et al. 2019 / Wang et al. 2023 semi-supervised sampler). Indices come from two streams
of seeded permutations that depend only on ``(seed, epoch)``: a step's global batch is cut into
``world_size * accumulation`` slots, rank ``r`` takes slots ``r * accumulation + k`` of it (global
slot ``step * world_size * accumulation + r * accumulation + k``), so ranks see disjoint data within
an epoch, and a slot holds the same images and augmentation whatever the number of ranks: a run may
continue on another world size with the same micro-batch and get the same batches (the global batch
= world_size x accumulation x batch_size). Epoch length: ``len(real) // global_batch`` steps
(drop-last) without generated data;
``ceil(len(real) / global_batch)`` with it, so an epoch processes as many images as the real set
holds, as in Wang et al. 2023. The sampler yields :class:`BatchKey` objects, consumed whole by
``TrainBatches.__getitem__`` (``DataLoader(batch_size=None)``), so augmentation is batched too.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import UserError

_REAL, _GENERATED, _AUGMENT, _STEP = 0, 1, 2, 3  # stream ids, mixed into the seeds


class BatchKey(NamedTuple):
    """One batch: indices into the real data, indices into the generated data, augmentation seed."""

    real: torch.Tensor  # int64 (n_real,)
    generated: torch.Tensor  # int64 (n_generated,), empty without generated data
    seed: int  # seeds the batch's augmentation


def derive_seed(*words: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence: well mixed, no collisions in practice)."""
    state = np.random.SeedSequence([int(w) % (1 << 63) for w in words]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def slot_seed(seed: int, epoch: int, slot: int) -> int:
    """Seeds the randomness of global slot ``slot``'s training step beyond its data (attack random starts,
    dropout, mixup): the same slot draws the same numbers on any rank of any world size."""
    return derive_seed(seed, epoch, _STEP, slot)


def permutation_stream(n: int, length: int, *seed_words: int) -> torch.Tensor:
    """The first ``length`` entries of concatenated seeded permutations of ``range(n)`` (int64)."""
    parts, have, k = [], 0, 0
    while have < length:
        g = torch.Generator().manual_seed(derive_seed(*seed_words, k))
        parts.append(torch.randperm(n, generator=g))
        have, k = have + n, k + 1
    return torch.cat(parts)[:length] if parts else torch.empty(0, dtype=torch.int64)


class MixedBatchSampler(Sampler[BatchKey]):
    """Per-rank micro-batches of ``batch_size`` (real + generated) whose order depends on (seed, epoch).

    ``accumulation`` micro-batches per rank make one step (``len()`` counts micro-batches:
    ``steps_per_epoch * accumulation``). Call :meth:`set_epoch` before each epoch (like ``DistributedSampler``).
    """

    def __init__(self, num_real: int, batch_size: int, *, num_generated: int = 0, generated_fraction: float = 0.0,
                 rank: int = 0, world_size: int = 1, seed: int = 0, accumulation: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"invalid rank {rank} for world size {world_size}")
        if batch_size < 1:
            raise UserError(f"invalid per-rank batch size {batch_size}: must be >= 1")
        if accumulation < 1:
            raise UserError(f"invalid accumulation steps {accumulation}: must be >= 1")
        if num_real < 1:
            raise UserError("the training set is empty")
        self.num_real, self.num_generated = int(num_real), int(num_generated)
        self.batch_size, self.rank, self.world_size, self.seed = int(batch_size), rank, world_size, int(seed)
        self.accumulation = int(accumulation)
        self.slots_per_step = world_size * self.accumulation
        self.generated_fraction = float(generated_fraction) if num_generated else 0.0
        self.n_generated = int(round(self.generated_fraction * self.batch_size)) if num_generated else 0
        self.n_real = self.batch_size - self.n_generated
        if num_generated and self.n_generated == 0:
            raise UserError(f"generated_fraction {generated_fraction} of a per-rank batch of {batch_size} rounds to "
                            f"0 generated images; raise batch_size or generated_fraction")
        if num_generated and self.n_real == 0:
            raise UserError(f"generated_fraction {generated_fraction} of a per-rank batch of {batch_size} leaves no "
                            f"real images; raise batch_size or lower generated_fraction")
        global_batch = self.batch_size * self.slots_per_step
        if num_generated:
            self.steps_per_epoch = math.ceil(self.num_real / global_batch)
        else:
            self.steps_per_epoch = max(1, self.num_real // global_batch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if "seed" in state and int(state["seed"]) != self.seed:
            raise UserError(f"sampler state was saved with seed {state['seed']}, this run uses seed {self.seed}")
        self.epoch = int(state["epoch"])

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation

    def slot(self, step: int, micro: int) -> int:
        """The global slot of this rank's micro-batch ``micro`` of step ``step`` (0-based, within the epoch)."""
        return step * self.slots_per_step + self.rank * self.accumulation + micro

    def __iter__(self) -> Iterator[BatchKey]:
        slots = self.steps_per_epoch * self.slots_per_step
        real = permutation_stream(self.num_real, slots * self.n_real, self.seed, self.epoch, _REAL)
        gen = permutation_stream(self.num_generated, slots * self.n_generated, self.seed, self.epoch, _GENERATED) \
            if self.n_generated else torch.empty(0, dtype=torch.int64)
        for step in range(self.steps_per_epoch):
            for micro in range(self.accumulation):
                slot = self.slot(step, micro)
                yield BatchKey(real[slot * self.n_real:(slot + 1) * self.n_real],
                               gen[slot * self.n_generated:(slot + 1) * self.n_generated],
                               derive_seed(self.seed, self.epoch, _AUGMENT, slot))
