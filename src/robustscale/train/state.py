"""What a resume needs: the counters, the resumable ``state.pt``, RNG states, and mid-epoch batches.

A run may resume on another number of ranks: batches depend only on (seed, epoch, global slot), each
slot's randomness is seeded from its position (:func:`seed_slot`), the epoch's running sums are totals
over ranks, and the run keeps its micro-batch (:func:`run_micro_batch_size`), so the saved per-rank RNG
states are only needed to continue on the same ranks bit for bit.
"""
from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import rundir
from ..config import NON_SEMANTIC_KEYS, TrainConfig
from ..data.sampler import slot_seed
from ..errors import UserError
from .distributed import Dist, gather_objects

__all__ = ["STATE_VERSION", "Counters", "new_sums", "rng_state", "set_rng_state", "seed_everything", "seed_slot",
           "check_resume", "collect_state", "save_state", "load_state", "run_micro_batch_size", "restore_state",
           "loader_from"]

STATE_VERSION = 1
_SUM_KEYS = ("loss", "adv_correct", "clean_correct", "clean_n", "n", "seconds")


@dataclasses.dataclass
class Counters:
    """Counters of a run that survive a resume (saved in state.pt)."""

    epoch: int = 0  # current epoch (0-based)
    step: int = 0  # batches done in the current epoch
    num_updates: int = 0  # optimizer steps, all epochs
    images_seen: int = 0  # training images, all ranks
    best_robust_acc: float | None = None  # the best selection score so far (cfg.selection_metric on its split)
    best_epoch: int | None = None
    best_eval: dict | None = None  # that epoch's per-epoch check: clean_acc, pgd_robust_acc, n_examples
    eval_flops: float = 0.0
    compute_pieces: list = dataclasses.field(default_factory=list)  # tracker summaries of earlier sessions
    # Per-epoch {epoch, pgd_robust_acc, fgsm_robust_acc, eval_images}: the collapse detector's input, and
    # its finding (``Collapse.to_record()``) once a run is flagged.
    eval_history: list = dataclasses.field(default_factory=list)
    collapse: dict | None = None
    partial: list | None = None  # per-rank partial epoch sums (mid-epoch resume)
    micro_batch_size: int | None = None  # images per forward/backward on a rank, kept for the run's life


def new_sums() -> dict:
    """Running sums of the current epoch (totals over ranks)."""
    return {k: 0.0 for k in _SUM_KEYS}


# ---------------------------------------------------------------------- RNG
def rng_state(device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_slot(seed: int, epoch: int, slot: int) -> None:
    """Seed torch / numpy / random for global slot ``slot`` of ``epoch`` (before its mixup and forward):
    attack random starts, dropout and mixup draw the same numbers for a slot on any rank of any world size."""
    seed_everything(slot_seed(seed, epoch, slot))


# ---------------------------------------------------------------------- state.pt
def check_resume(run_dir: Path, cfg: TrainConfig | None) -> TrainConfig:
    """The config to continue ``run_dir`` with: the saved one, where/how-to-write keys from ``cfg``."""
    cfg_path, state_path = run_dir / rundir.CONFIG, run_dir / rundir.STATE
    if not run_dir.is_dir():
        raise UserError(f"resume: run directory not found: {run_dir}")
    if not cfg_path.is_file() or not state_path.is_file():
        if cfg_path.is_file():  # started, but stopped before its first checkpoint: nothing to resume from
            raise UserError(f"resume: {run_dir} stopped before its first checkpoint (no state.pt), so there is "
                            f"nothing to resume; rerun the command that started it (robustscale train --config "
                            f"{cfg_path} trains the same run)")
        raise UserError(f"resume: {run_dir} is not a resumable run (needs config.yaml and state.pt)")
    saved = TrainConfig.from_yaml(cfg_path)
    if saved.output_dir is not None and not Path(saved.output_dir).is_absolute():
        # Relative to where the run started, not to here: the run (and its store) live beside this folder.
        saved = saved.replace(output_dir=str(run_dir.resolve().parent))
    if cfg is None:
        return saved
    ours, theirs = cfg.to_dict(), saved.to_dict()
    diff = [k for k in ours if k not in NON_SEMANTIC_KEYS and ours[k] != theirs.get(k)]
    if diff:
        shown = ", ".join(f"{k} {theirs.get(k)!r} != {ours[k]!r}" for k in diff[:4])
        raise UserError(f"resume: {run_dir} was made by a different config ({shown}); "
                        f"resume without --config or with the same one")
    # Keep where/how it is written from the new config, what it computes from the saved one.
    return saved.replace(**{k: ours[k] for k in NON_SEMANTIC_KEYS if k in ours and k != "name"})


def collect_state(cfg: TrainConfig, dinfo: Dist, model, step, sampler, counters: Counters, sums: dict,
                  rng: dict) -> dict:
    """The resumable state; per-rank parts (RNG, partial sums) are gathered (collective).

    ``step``: the :class:`~.step.TrainStep` (task with its EMA, optimizer, scheduler, scaler).
    """
    per_rank = gather_objects({"rng": rng, "sums": dict(sums)}, dinfo)
    task = step.task
    ema = task.get_trainable_module(ema=True) if task.has_ema() else None
    return {
        "version": STATE_VERSION, "config_hash": cfg.config_hash(),
        "progress": dataclasses.asdict(dataclasses.replace(counters, partial=[p["sums"] for p in per_rank])),
        "rng": [p["rng"] for p in per_rank],
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.scheduler.state_dict() if step.scheduler is not None else None,
        "scaler": step.scaler.state_dict() if step.scaler is not None else None,
        "sampler": sampler.state_dict() if hasattr(sampler, "state_dict") else None,
    }


def save_state(run_dir: Path, state: dict) -> None:
    rundir.atomic_write(run_dir / rundir.STATE, lambda tmp: torch.save(state, tmp))


def load_state(run_dir: Path, cfg: TrainConfig) -> dict:
    """``state.pt`` of ``run_dir`` (on the CPU), checked to belong to ``cfg``; read before any setup."""
    path = run_dir / rundir.STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"resume: cannot read {path}: {exc}") from None
    if state.get("version") != STATE_VERSION or not cfg.matches_hash(state.get("config_hash")):
        raise UserError(f"resume: {path} does not belong to this run's config (hash "
                        f"{state.get('config_hash')} != {cfg.config_hash()})")
    return state


def run_micro_batch_size(cfg: TrainConfig, state: dict | None) -> int | None:
    """The micro-batch this session uses: a resumed run's own (saved in state.pt; before it was saved, the
    per-rank batch of the processes that wrote it), else ``cfg.micro_batch_size`` (None: batch_size / ranks).
    BatchNorm normalises over a micro-batch, so a run that changed it would no longer be the same run."""
    if state is None:
        return cfg.micro_batch_size
    saved = state["progress"].get("micro_batch_size") or cfg.batch_size // max(len(state["rng"]), 1)
    if cfg.micro_batch_size is not None and cfg.micro_batch_size != saved:
        raise UserError(f"resume: micro_batch_size {cfg.micro_batch_size} != the run's {saved} (BatchNorm "
                        f"statistics are per micro-batch); resume without micro_batch_size, on any number of "
                        f"processes that divides {cfg.batch_size // saved}")
    return saved


def restore_state(state: dict, dinfo: Dist, model, step) -> tuple[Counters, dict, dict | None]:
    """Load ``state`` (from :func:`load_state`) into ``model`` and ``step``; returns this rank's (counters, sums,
    rng). ``rng`` is None when the run was saved by another number of ranks (each slot seeds its own then)."""
    model.load_state_dict(state["model"])
    if state["ema"] is not None and step.task.has_ema():
        step.task.get_trainable_module(ema=True).load_state_dict(state["ema"])
    step.optimizer.load_state_dict(state["optimizer"])
    if step.scheduler is not None and state["scheduler"] is not None:
        step.scheduler.load_state_dict(state["scheduler"])
    if step.scaler is not None and state["scaler"] is not None:
        step.scaler.load_state_dict(state["scaler"])
    counters = Counters(**state["progress"])
    same_world = len(state["rng"]) == dinfo.world
    # The partial sums are totals over ranks (equal on every rank) but for each rank's own seconds.
    partial = counters.partial or [None] * len(state["rng"])
    sums = dict(partial[dinfo.rank if same_world else 0] or new_sums())
    counters.partial = None
    return counters, sums, state["rng"][dinfo.rank] if same_world else None


# ---------------------------------------------------------------------- mid-epoch batches
class _SkipSampler:
    """Yields ``sampler``'s items after the first ``n`` (mid-epoch resume; keys are cheap, no data is loaded)."""

    def __init__(self, sampler, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self):
        return max(len(self.sampler) - self.n, 0)


def loader_from(loader, skip: int):
    """``loader`` starting at batch ``skip`` of the current epoch (same dataset, workers, seeding)."""
    if skip <= 0:
        return loader
    return DataLoader(loader.dataset, batch_size=None, sampler=_SkipSampler(loader.sampler, skip),
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator)
