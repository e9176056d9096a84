"""The training loop: one process or torchrun/DDP, adversarial methods as timm tasks.

``train(cfg)`` writes a run directory ``<cfg.output_dir>/<cfg.name>/``::

    config.yaml        the resolved TrainConfig, exactly what ran (round-trips through TrainConfig.from_yaml)
    env.json           package / torch / timm versions, host, devices, command line (one entry per session)
    metrics.jsonl      one JSON object per epoch (train loss/acc, clean and PGD-k accuracy, lr, eps, compute)
    last.safetensors   weights after the last epoch  } the inner timm model's state dict (timm key names;
    best.safetensors   weights of the best epoch     } EMA weights when EMA is on); model name, dataset,
                                                     } mean/std in the metadata
    state.pt           everything needed to resume (weights, optimizer, scheduler, EMA, scaler, RNG
                       states of every rank, epoch and step within it, partial epoch metrics)
    summary.json       the run record (robustscale.schema columns + details)

Speed: the fast path is the default (channels-last, cudnn.benchmark and TF32 on GPU, no extra clean
forward, input-gradient-only attack steps). Training accuracy on the progress bar is measured on the
examples the loss used (adversarial ones for pgd / fgsm_rs / trades); clean training accuracy is shown
only where the clean logits exist anyway (standard, trades).

Interrupts: the first Ctrl-C stops at the end of the current step (ranks agree under DDP) and saves a
resumable state; a second one raises at once. ``resume=<run_dir>`` continues bit-for-bit on CPU with
``deterministic``: batches depend only on (seed, epoch), and RNG states are saved per rank.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import Amp, Compile, Method, NON_SEMANTIC_KEYS, TrainConfig
from .errors import UserError
from .store import record_epoch, record_run_start

__all__ = ["train", "load_run", "run_name", "save_weights", "load_weights", "should_compile", "TrainingDiverged",
           "STATE_VERSION"]

STATE_VERSION = 1
CHECKPOINTS = ("best", "last")


class TrainingDiverged(UserError):
    """The loss became NaN/inf: the message names the epoch and step. Exit code 2."""


class _StopRequested(Exception):
    """Ctrl-C arrived (on any rank); the state at the start of the current step is saved."""


# ---------------------------------------------------------------------------------------------- helpers
def run_name(cfg: TrainConfig) -> str:
    """Default run name: ``<model>-<dataset>-<method><steps>-<hash8>``, e.g. ``wide_resnet28_10-cifar10-pgd10-1a2b3c4d``."""
    if cfg.method is Method.STANDARD:
        method = "standard"
    elif cfg.method is Method.FGSM_RS:
        method = "fgsm_rs"
    else:
        method = f"{cfg.method.value}{cfg.attack_steps}"
    return f"{cfg.model}-{cfg.dataset}-{method}-{cfg.config_hash()[:8]}"


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same folder, then ``os.replace`` (never a half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _json_default(value):
    if hasattr(value, "value"):  # enums
        return value.value
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _dumps(obj) -> str:
    return json.dumps(obj, default=_json_default)


def _inner(model):
    """The timm model inside NormalizedModel (checkpoints use its key names)."""
    return getattr(model, "model", model)


def save_weights(path: str | Path, model, cfg: TrainConfig, **metadata: Any) -> None:
    """Save ``model``'s inner timm state dict to safetensors, with model/dataset/mean/std in the metadata.

    ``timm.create_model(meta["model"], num_classes=..., in_chans=...).load_state_dict(load_file(path))``
    works without robustscale; inputs must then be normalized with ``meta["mean"]`` / ``meta["std"]``.
    """
    from safetensors.torch import save_file

    from . import __version__

    state = {k: v.detach().to("cpu").contiguous() for k, v in _inner(model).state_dict().items()}
    mean = getattr(model, "mean", None)
    std = getattr(model, "std", None)
    meta = {
        "format": "pt", "model": cfg.model, "dataset": cfg.dataset, "method": cfg.method.value,
        "eps": repr(cfg.eps), "norm": cfg.norm.value, "config_hash": cfg.config_hash(),
        "num_classes": str(getattr(_inner(model), "num_classes", "")),
        "mean": json.dumps([float(m) for m in mean.flatten()]) if mean is not None else "",
        "std": json.dumps([float(s) for s in std.flatten()]) if std is not None else "",
        "robustscale_version": __version__,
    }
    meta.update({k: v if isinstance(v, str) else _dumps(v) for k, v in metadata.items()})
    _atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=meta))


def load_weights(path: str | Path, model) -> dict[str, str]:
    """Load a checkpoint written by :func:`save_weights` into ``model`` (NormalizedModel or timm model);
    returns the metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    _inner(model).load_state_dict(load_file(str(path)))
    return meta


def _build_model(cfg: TrainConfig, num_classes: int, in_chans: int):
    from .data.info import dataset_info
    from .models import create_model

    info = dataset_info(cfg.dataset)
    kwargs = {"drop_rate": cfg.drop_rate} if cfg.drop_rate > 0 else {}
    return create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, mean=info.mean if
                        len(info.mean) == in_chans else None, std=info.std if len(info.std) == in_chans else None,
                        dataset=cfg.dataset, **kwargs)


def load_run(run_dir: str | Path, checkpoint: str = "best"):
    """``(TrainConfig, model)`` of a finished or interrupted run; the model takes [0,1] pixels, eval mode, CPU.

    ``checkpoint``: ``"best"`` (highest per-epoch PGD accuracy; falls back to ``last`` if absent) or ``"last"``.
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"not a run directory (no config.yaml): {run_dir}")
    cfg = TrainConfig.from_yaml(cfg_path)
    path = run_dir / f"{checkpoint}.safetensors"
    if not path.is_file():
        path = run_dir / "last.safetensors"
    if not path.is_file():
        raise UserError(f"run {run_dir} has no checkpoint yet (no best/last.safetensors)")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    from .data.info import dataset_info

    info = dataset_info(cfg.dataset)
    num_classes = int(meta.get("num_classes") or info.num_classes or 10)
    in_chans = len(json.loads(meta["mean"])) if meta.get("mean") else info.in_chans
    model = _build_model(cfg, num_classes, in_chans)
    load_weights(path, model)
    return cfg, model.eval()


# ---------------------------------------------------------------------------------------------- distributed
@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed():
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
    return _Dist(rank, world, local_rank, device, owns)


def _all_reduce_(tensor, dinfo: _Dist):
    if dinfo.world > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def _gather_objects(obj, dinfo: _Dist) -> list:
    if dinfo.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * dinfo.world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------- RNG
def _rng_state(device) -> dict:
    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- interrupts
class _Interrupts:
    """First SIGINT sets a flag checked at step boundaries; the second raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: stopping after this step and saving a resumable checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _SkipSampler:
    """Yields ``sampler``'s items after the first ``n`` (mid-epoch resume; keys are cheap, no data is loaded)."""

    def __init__(self, sampler, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        import itertools

        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self):
        return max(len(self.sampler) - self.n, 0)


def _loader_from(loader, skip: int):
    """``loader`` starting at batch ``skip`` of the current epoch (same dataset, workers, seeding)."""
    if skip <= 0:
        return loader
    from torch.utils.data import DataLoader

    return DataLoader(loader.dataset, batch_size=None, sampler=_SkipSampler(loader.sampler, skip),
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator)


# ---------------------------------------------------------------------------------------------- the run
@dataclasses.dataclass
class _Progress:
    """Counters that survive a resume (saved in state.pt)."""

    epoch: int = 0  # current epoch (0-based)
    step: int = 0  # batches done in the current epoch
    num_updates: int = 0  # optimizer steps, all epochs
    images_seen: int = 0  # training images, all ranks
    best_robust_acc: float | None = None
    best_epoch: int | None = None
    eval_flops: float = 0.0
    compute_pieces: list = dataclasses.field(default_factory=list)  # tracker summaries of earlier sessions
    partial: list | None = None  # per-rank partial epoch sums (mid-epoch resume)


_SUM_KEYS = ("loss", "adv_correct", "clean_correct", "clean_n", "n", "seconds")


def _new_sums() -> dict:
    return {k: 0.0 for k in _SUM_KEYS}


def _check_resume(run_dir: Path, cfg: TrainConfig | None) -> TrainConfig:
    cfg_path, state_path = run_dir / "config.yaml", run_dir / "state.pt"
    if not run_dir.is_dir():
        raise UserError(f"resume: run directory not found: {run_dir}")
    if not cfg_path.is_file() or not state_path.is_file():
        raise UserError(f"resume: {run_dir} is not a resumable run (needs config.yaml and state.pt)")
    saved = TrainConfig.from_yaml(cfg_path)
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


def _environment(dinfo: _Dist) -> dict:
    import numpy
    import timm
    import torch

    from . import __version__

    device_name = torch.cuda.get_device_name(dinfo.device) if dinfo.device.type == "cuda" else platform.processor() \
        or platform.machine()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
        "platform": platform.platform(), "python": platform.python_version(),
        "robustscale": __version__, "torch": torch.__version__, "timm": timm.__version__,
        "numpy": numpy.__version__, "cuda": torch.version.cuda, "device": str(dinfo.device),
        "device_name": device_name, "world_size": dinfo.world, "threads": torch.get_num_threads(),
        "command": sys.argv,
    }


def _configure_backends(cfg: TrainConfig, device) -> None:
    import torch

    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv kernels once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _autocast(cfg: TrainConfig, device):
    import torch

    if cfg.amp is Amp.OFF:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp is Amp.BF16 else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# `compile: auto` on CPU: eager below this many training FLOPs per rank. Compilation costs a fixed
# ~30 s (cold inductor cache, 2 cores) and then saves a share of every step, so the break-even is a
# FLOP count: measured 8.6k images x 4.65 GFLOP = 40 TFLOP for WRN-16-2 PGD-10 at 32x32, and 45k x
# 0.525 GFLOP = 24 TFLOP for WRN-16-1 PGD-5 at 28x28 (docs/benchmarks.md). Tests and the demo stay eager.
AUTO_COMPILE_MIN_TRAIN_FLOPS = 3e13


def _have_cpp_compiler() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
        return True
    except Exception:  # inductor's CPU backend needs a C++ compiler; without one, stay eager
        return False


def should_compile(cfg: TrainConfig, device_type: str, train_flops: float | None = None) -> tuple[bool, str]:
    """Whether to ``torch.compile`` the model for ``cfg`` on ``device_type``, and why (one line).

    ``train_flops``: the training FLOPs this rank will execute (None: a steady-state measurement, as in
    ``robustscale bench``). ``auto`` compiles on CUDA always, and on the CPU when a C++ compiler exists
    and the run is long enough to repay the warm-up (``AUTO_COMPILE_MIN_TRAIN_FLOPS``).
    """
    if cfg.compile is Compile.ON:
        return True, "compile on"
    if cfg.compile is Compile.OFF:
        return False, "compile off"
    if device_type == "cuda":
        return True, "compile auto: compiled on CUDA"
    if device_type != "cpu":
        return False, f"compile auto: eager on {device_type}"
    if train_flops is not None and train_flops < AUTO_COMPILE_MIN_TRAIN_FLOPS:
        return False, (f"compile auto: eager, a short CPU run ({train_flops:.2g} training FLOPs < "
                       f"{AUTO_COMPILE_MIN_TRAIN_FLOPS:.0e} would not repay the compile warm-up)")
    if not _have_cpp_compiler():
        return False, "compile auto: eager, no C++ compiler found for torch.compile on CPU"
    return True, "compile auto: compiled (long CPU run)"


def _eps_at(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear eps ramp over the first ``eps_warmup_epochs`` epochs (per step, never 0)."""
    if cfg.eps_warmup_epochs <= 0:
        return cfg.eps
    done = epoch * steps_per_epoch + step + 1
    return cfg.eps * min(1.0, done / (cfg.eps_warmup_epochs * steps_per_epoch))


def _evaluate(model, x_eval, y_eval, cfg: TrainConfig, dinfo: _Dist, autocast) -> tuple[float, float | None, int]:
    """(clean acc %, PGD-k acc % or None, images) on this rank's shard of the eval subset, reduced."""
    import torch

    from .attacks import pgd

    k = cfg.eval_attack_steps
    device = dinfo.device
    idx = torch.arange(dinfo.rank, len(x_eval), dinfo.world)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * (dinfo.rank + 1))
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(idx), cfg.eval_batch_size):
            sel = idx[start:start + cfg.eval_batch_size]
            x = x_eval[sel].to(device, non_blocking=True)
            y = y_eval[sel].to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast, torch.no_grad():
                counts[0] += (model(x).argmax(1) == y).sum()
            if k > 0 and cfg.eps > 0:
                with autocast:
                    x_adv = pgd(model, x, y, cfg.eps, cfg.eval_step_size_factor * cfg.eps / k, k,
                                norm=cfg.norm.value, generator=gen)
                    with torch.no_grad():
                        counts[1] += (model(x_adv).argmax(1) == y).sum()
            counts[2] += len(sel)
    finally:
        model.train(was_training)
    _all_reduce_(counts, dinfo)
    n = int(counts[2].item())
    clean = 100.0 * counts[0].item() / max(n, 1)
    robust = 100.0 * counts[1].item() / max(n, 1) if k > 0 and cfg.eps > 0 else None
    return clean, robust, n


def train(cfg: TrainConfig | None, resume: str | Path | None = None) -> dict:
    """Train ``cfg`` (or continue the run in ``resume``); returns the summary (also in summary.json).

    Works in one process or under ``torchrun`` (gloo on CPU, NCCL on GPU; each rank gets
    ``batch_size // world_size`` images per step; only rank 0 writes).
    Raises:
        UserError: bad config / data / resume directory; TrainingDiverged (a UserError) on a NaN/inf loss.
        KeyboardInterrupt: after saving a resumable state (Ctrl-C).
    """
    if cfg is None and resume is None:
        raise UserError("nothing to train: give a config or a run directory to resume")
    resume_dir = Path(resume) if resume is not None else None
    if resume_dir is not None:
        cfg = _check_resume(resume_dir, cfg)
    import torch

    dinfo = _setup_distributed()
    # Backend switches are process-global: restore them so that a library caller is left as it was.
    saved_flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                   torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    from .store import record_run_end

    trainer = None
    try:
        trainer = _Trainer(cfg, dinfo, resume_dir)
        summary = trainer.run()
        record_run_end(trainer.cfg, summary)
        return summary
    except BaseException as exc:
        if trainer is not None and getattr(trainer, "_in_store", False):  # never leave a half row `running`
            record_run_end(trainer.cfg, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        torch.use_deterministic_algorithms(saved_flags[0], warn_only=saved_flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved_flags[2:]
        if dinfo.owns_group:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()


class _Trainer:
    def __init__(self, cfg: TrainConfig, dinfo: _Dist, resume_dir: Path | None):
        self.cfg, self.dinfo, self.resume_dir = cfg, dinfo, resume_dir
        self._safe_progress = None  # (progress, sums, rng) of the last consistent point, for a raw Ctrl-C
        self.last_clean = self.last_robust = None

    # ------------------------------------------------------------------ setup
    def _prepare_run_dir(self) -> Path:
        cfg = self.cfg
        if self.resume_dir is not None:
            self.cfg = cfg = cfg.replace(name=cfg.name or self.resume_dir.name)
            return self.resume_dir
        if cfg.name is None:
            self.cfg = cfg = cfg.replace(name=run_name(cfg))
        run_dir = Path(cfg.output_dir) / cfg.name
        if self.dinfo.main and ((run_dir / "state.pt").exists() or (run_dir / "summary.json").exists()):
            raise UserError(f"run directory {run_dir} already holds a run; continue it with --resume {run_dir} "
                            f"or pick another --name")
        return run_dir

    def _setup(self) -> None:
        import torch

        from .data import build_mixup, build_train_loader, load_eval_tensors
        from .data.info import dataset_info
        from .models import check_model_name
        from .tasks import create_task

        cfg, dinfo = self.cfg, self.dinfo
        check_model_name(cfg.model)
        from timm.optim import create_optimizer_v2, list_optimizers
        from timm.scheduler import create_scheduler_v2

        from .errors import one_of

        one_of(cfg.opt.lower(), list_optimizers(), "opt")
        if cfg.batch_size % dinfo.world:
            raise UserError(f"batch_size {cfg.batch_size} is not divisible by the {dinfo.world} processes")
        if cfg.amp is Amp.FP16 and dinfo.device.type == "cpu":
            raise UserError("amp fp16 needs a GPU; use --amp bf16 on CPU")
        _configure_backends(cfg, dinfo.device)
        info = dataset_info(cfg.dataset)
        self.loader = build_train_loader(cfg, dinfo.rank, dinfo.world)
        real = self.loader.dataset.real
        self.train_images = len(self.loader.dataset)
        num_classes = info.num_classes or len(real.classes)
        image_shape = tuple(getattr(real, "image_shape", None) or info.input_size)
        if cfg.eval_subset > 0:
            self.x_eval, self.y_eval = load_eval_tensors(cfg.dataset, cfg.eval_subset, cfg.data_dir, cfg.download,
                                                         input_size=cfg.input_size)
        else:
            self.x_eval = self.y_eval = None
        self.mixup = build_mixup(cfg, num_classes, dinfo.world)

        _seed_everything(cfg.seed)  # same initial weights on every rank
        model = _build_model(cfg, num_classes, image_shape[0]).to(dinfo.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.num_classes = num_classes
        self.task = create_task(cfg, model, soft_targets=self.mixup is not None)
        if cfg.ema_decay is not None:
            self.task.setup_ema(decay=cfg.ema_decay)
        lr = cfg.learning_rate
        self.optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay,
                                             momentum=cfg.momentum)
        self.steps_per_epoch = len(self.loader)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
            min_lr=cfg.min_lr, warmup_lr=min(1e-5, lr), step_on_epochs=False, updates_per_epoch=self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(dinfo.device.type) if cfg.amp is Amp.FP16 else None
        self.autocast = _autocast(cfg, dinfo.device)

        # FLOPs of one training step, measured once (meta tensors: no compute spent); prices checked up front.
        from .compute import CostModel, measure_step_flops

        self.step_flops = measure_step_flops(model, cfg, image_shape)
        self.cost_model = CostModel.from_yaml(preset=cfg.price_preset)

        rank_images = cfg.epochs * len(self.loader) * (cfg.batch_size // dinfo.world)
        self.compiled, self.compile_reason = should_compile(cfg, dinfo.device.type,
                                                            rank_images * self.step_flops.train_step_flops)
        if self.compiled:
            if cfg.compile is Compile.AUTO:
                import torch._dynamo

                torch._dynamo.config.suppress_errors = True  # auto: a graph that fails to compile runs eagerly
            self.task.compile()
        if dinfo.main and cfg.progress:
            print(self.compile_reason, file=sys.stderr, flush=True)
        if dinfo.world > 1:
            self.task.prepare_distributed(device_ids=[dinfo.local_rank] if dinfo.device.type == "cuda" else None)
        # Attack random starts: different on every rank, reproducible from the seed.
        _seed_everything(cfg.seed + 1_000_003 * (dinfo.rank + 1))

    def _eval_model(self):
        if self.task.has_ema():
            return self.task.get_trainable_module(ema=True).module
        task = self.task
        model = task.attack_model if hasattr(task, "attack_model") else _unwrap_ddp(task.trainable_module)
        # Eager for the per-epoch check: a compiled model would recompile for the eval batch size (measured:
        # 5.5 s eager vs 18.8 s compiled for PGD-10 on 256 images of WRN-16-2), for a few seconds of work.
        return getattr(model, "_orig_mod", model)

    # ------------------------------------------------------------------ state
    def _state(self, progress: _Progress, sums: dict, rng_state: dict) -> dict:
        """The resumable state; per-rank parts (RNG, partial sums) are gathered (collective)."""
        per_rank = _gather_objects({"rng": rng_state, "sums": dict(sums)}, self.dinfo)
        ema = self.task.get_trainable_module(ema=True) if self.task.has_ema() else None
        return {
            "version": STATE_VERSION, "config_hash": self.cfg.config_hash(),
            "progress": dataclasses.asdict(dataclasses.replace(progress, partial=[p["sums"] for p in per_rank])),
            "rng": [p["rng"] for p in per_rank],
            "model": self.model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "sampler": self.loader.sampler.state_dict() if hasattr(self.loader.sampler, "state_dict") else None,
        }

    def _save_state(self, state: dict) -> None:
        import torch

        if self.dinfo.main:
            _atomic_write(self.run_dir / "state.pt", lambda tmp: torch.save(state, tmp))

    def _load_state(self) -> _Progress:
        import torch

        path = self.run_dir / "state.pt"
        try:
            state = torch.load(path, map_location=self.dinfo.device, weights_only=False)
        except Exception as exc:
            raise UserError(f"resume: cannot read {path}: {exc}") from None
        if state.get("version") != STATE_VERSION or state.get("config_hash") != self.cfg.config_hash():
            raise UserError(f"resume: {path} does not belong to this run's config (hash "
                            f"{state.get('config_hash')} != {self.cfg.config_hash()})")
        if len(state["rng"]) != self.dinfo.world:
            raise UserError(f"resume: {path} was saved by {len(state['rng'])} process(es), this run has "
                            f"{self.dinfo.world}; resume with --nproc_per_node {len(state['rng'])}")
        self.model.load_state_dict(state["model"])
        if state["ema"] is not None and self.task.has_ema():
            self.task.get_trainable_module(ema=True).load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        progress = _Progress(**state["progress"])
        self._resume_rng = state["rng"][self.dinfo.rank]
        self._resume_sums = (progress.partial or [None] * self.dinfo.world)[self.dinfo.rank] or _new_sums()
        progress.partial = None
        return progress

    # ------------------------------------------------------------------ files
    def _write_config_and_env(self) -> None:
        import yaml

        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_text(run_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        env_path = run_dir / "env.json"
        sessions = []
        if env_path.is_file():
            with contextlib.suppress(Exception):
                sessions = json.loads(env_path.read_text()).get("sessions", [])
        sessions.append(_environment(self.dinfo))
        _write_text(env_path, json.dumps({"sessions": sessions}, indent=2, default=str) + "\n")

    def _append_metrics(self, row: dict) -> None:
        path = self.run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        lines = [ln for ln in lines if ln.strip() and json.loads(ln).get("epoch", 0) < row["epoch"]]
        lines.append(_dumps(row))
        _write_text(path, "\n".join(lines) + "\n")

    def _truncate_metrics(self, epochs_done: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln).get("epoch", 0) <= epochs_done]
            if len(kept) != len(lines):
                _write_text(path, "".join(ln + "\n" for ln in kept))

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        self.run_dir = self._prepare_run_dir()
        record_run_start(self.cfg, self.run_dir, resumed=self.resume_dir is not None)
        self._in_store = True
        self._setup()
        if self.resume_dir is not None:
            progress = self._load_state()
            sums = self._resume_sums
            _set_rng_state(self._resume_rng, self.dinfo.device)
        else:
            progress, sums = _Progress(), _new_sums()
        if self.dinfo.main:
            self._write_config_and_env()
            self._truncate_metrics(progress.epoch)
        from .compute import ComputeTracker

        tracker = ComputeTracker(self.cfg, device=self.dinfo.device)
        status, error = "completed", None
        with _Interrupts() as interrupts:
            self.interrupts = interrupts
            try:
                with tracker:
                    self._loop(progress, sums, tracker)
            except _StopRequested as stop:
                status = "interrupted"
                progress, sums, rng = stop.args
                progress.compute_pieces = progress.compute_pieces + [tracker.summary()]
                self._save_state(self._state(progress, sums, rng))
                self._finish(progress, status, tracker, progress.compute_pieces)
                if self.dinfo.main:
                    print(f"interrupted at epoch {progress.epoch + 1} step {progress.step}; resume with: "
                          f"robustscale train --resume {self.run_dir}", file=sys.stderr)
                raise KeyboardInterrupt from None
            except KeyboardInterrupt:
                # Raised mid-step (second Ctrl-C): save unless the weights were being updated.
                status = "interrupted"
                saved = False
                if self._safe_progress is not None and self.dinfo.world == 1:
                    progress, sums, rng = self._safe_progress
                    progress.compute_pieces = progress.compute_pieces + [tracker.summary()]
                    self._save_state(self._state(progress, sums, rng))
                    self._finish(progress, status, tracker, progress.compute_pieces)
                    saved = True
                if self.dinfo.main:
                    where = f"resume with: robustscale train --resume {self.run_dir}" if saved else \
                        "kept the checkpoint of the last finished epoch"
                    print(f"interrupted at epoch {progress.epoch + 1}; {where}", file=sys.stderr)
                raise
            except TrainingDiverged as exc:
                status, error = "diverged", str(exc)
                self._finish(progress, status, tracker, progress.compute_pieces + [tracker.summary()], error=error)
                raise
        return self._finish(progress, status, tracker, progress.compute_pieces + [tracker.summary()])

    def _loop(self, progress: _Progress, sums: dict, tracker) -> None:
        import torch
        from tqdm import tqdm

        cfg, dinfo, task = self.cfg, self.dinfo, self.task
        device = dinfo.device
        params = [p for p in self.model.parameters() if p.requires_grad]
        self._safe_progress = None
        for epoch in range(progress.epoch, cfg.epochs):
            progress.epoch = epoch
            self.loader.sampler.set_epoch(epoch)
            loader = _loader_from(self.loader, progress.step)
            task.train()
            bar = tqdm(total=self.steps_per_epoch, initial=progress.step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="batch", disable=not (dinfo.main and cfg.progress), dynamic_ncols=True, leave=False,
                       file=sys.stderr)
            no_stop = torch.zeros((), device=device)
            t_epoch = time.perf_counter()
            t_window, n_window = t_epoch, 0
            batches = iter(loader)
            while progress.step < self.steps_per_epoch:
                # What a resume from here needs, captured before this step touches any RNG.
                rng = _rng_state(device)
                sums_before = dict(sums, seconds=sums["seconds"] + time.perf_counter() - t_epoch)
                self._safe_progress = (dataclasses.replace(progress), sums_before, rng)
                try:
                    x, y = next(batches)
                except StopIteration:
                    break
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if self.mixup is not None:
                    x, y = self.mixup(x, y)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if cfg.method is not Method.STANDARD:
                    task.set_eps(_eps_at(cfg, epoch, progress.step, self.steps_per_epoch))
                with self.autocast:
                    out = task(x, y)
                loss = out["loss"]
                target = y.argmax(1) if y.dim() == 2 else y
                clean = out.get("clean_output")
                adv_correct = (out["output"].detach().argmax(1) == target).sum() \
                    if out.get("x_adv") is not None else no_stop
                clean_correct = (clean.detach().argmax(1) == target).sum() if clean is not None else no_stop
                stop = no_stop + 1 if self.interrupts.requested else no_stop
                # One sync per step (summed over ranks): loss and accuracies for the bar, the NaN check, and
                # the Ctrl-C flag, so that all ranks stop at the same step.
                flags = torch.stack([loss.detach().float(), adv_correct.float(), clean_correct.float(),
                                     stop.float()])
                loss_sum, adv_sum, clean_sum, stop = _all_reduce_(flags, dinfo).tolist()
                loss_value = loss_sum / dinfo.world
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss became {loss_value} at epoch {epoch + 1} step {progress.step + 1} "
                        f"(lr {self.optimizer.param_groups[0]['lr']:.3g}); lower lr/lr_base or set clip_grad; "
                        f"the last good checkpoint is kept in {self.run_dir}")
                self._safe_progress = None  # weights are changing: not a consistent state until the step ends
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    if cfg.clip_grad:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    if cfg.clip_grad:
                        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                    self.optimizer.step()
                progress.num_updates += 1
                if self.scheduler is not None:
                    self.scheduler.step_update(progress.num_updates)
                task.update_ema(step=progress.num_updates)

                n = x.shape[0] * dinfo.world  # all ranks (equal per-rank batches)
                sums["adv_correct"] += adv_sum
                sums["clean_correct"] += clean_sum
                if clean is not None:
                    sums["clean_n"] += n
                sums["loss"] += loss_value * n
                sums["n"] += n
                progress.step += 1
                progress.images_seen += n
                n_window += n
                bar.update(1)
                if progress.step % cfg.log_every == 0 or progress.step == self.steps_per_epoch:
                    now = time.perf_counter()
                    post = {"img/s": f"{n_window / max(now - t_window, 1e-9):.0f}",
                            "loss": f"{sums['loss'] / max(sums['n'], 1):.3f}"}
                    if cfg.method is not Method.STANDARD:
                        post["adv_acc"] = f"{100 * sums['adv_correct'] / max(sums['n'], 1):.1f}"
                    if sums["clean_n"]:
                        post["clean_acc"] = f"{100 * sums['clean_correct'] / sums['clean_n']:.1f}"
                    bar.set_postfix(post, refresh=False)
                    t_window, n_window = now, 0
                if stop and progress.step < self.steps_per_epoch:
                    # Ctrl-C (on some rank): stop between steps, where the state is exactly resumable.
                    sums_now = dict(sums, seconds=sums["seconds"] + time.perf_counter() - t_epoch)
                    bar.close()
                    raise _StopRequested(dataclasses.replace(progress), sums_now, _rng_state(device))
            bar.close()
            sums["seconds"] += time.perf_counter() - t_epoch
            # Training of this epoch is done; an interrupt during eval resumes straight into eval.
            self._safe_progress = (dataclasses.replace(progress), dict(sums), _rng_state(device))
            self._end_epoch(progress, sums, tracker)
            progress.epoch, progress.step = epoch + 1, 0
            sums.clear()
            sums.update(_new_sums())
            state = self._state(progress, sums, _rng_state(device))
            self._save_state(state)
            self._safe_progress = (dataclasses.replace(progress), dict(sums), state["rng"][dinfo.rank])
            stop = torch.tensor(float(self.interrupts.requested), device=device)
            if _all_reduce_(stop, dinfo).item() and epoch + 1 < cfg.epochs:
                raise _StopRequested(*self._safe_progress)

    def _end_epoch(self, progress: _Progress, sums: dict, tracker) -> None:
        import torch

        from .compute import estimate_eval_flops

        cfg, dinfo = self.cfg, self.dinfo
        t = sums  # already totals over ranks (reduced every step)
        seconds = t["seconds"]
        clean = robust = None
        n_eval = 0
        t_eval = time.perf_counter()
        if self.x_eval is not None:
            clean, robust, n_eval = _evaluate(self._eval_model(), self.x_eval, self.y_eval, cfg, dinfo, self.autocast)
            progress.eval_flops += estimate_eval_flops(self.step_flops, n_eval,
                                                       cfg.eval_attack_steps if cfg.eps > 0 else 0)
        eval_seconds = time.perf_counter() - t_eval
        self.last_clean, self.last_robust = clean, robust
        score = robust if robust is not None else clean
        is_best = score is None or progress.best_robust_acc is None or score > progress.best_robust_acc
        if is_best:
            progress.best_robust_acc, progress.best_epoch = score, progress.epoch + 1
        row = {
            "epoch": progress.epoch + 1,
            "train_loss": t["loss"] / max(t["n"], 1),
            "train_adv_acc": 100 * t["adv_correct"] / t["n"] if cfg.method is not Method.STANDARD and t["n"] else None,
            "train_clean_acc": 100 * t["clean_correct"] / t["clean_n"] if t["clean_n"] else None,
            "clean_acc": clean, "pgd_robust_acc": robust, "eval_images": n_eval,
            "eval_attack": f"pgd{cfg.eval_attack_steps}-{cfg.norm.value}" if robust is not None else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "eps": self.task.eps if hasattr(self.task, "eps") else cfg.eps,
            "images_per_second": t["n"] / max(seconds, 1e-9),
            "epoch_seconds": seconds, "eval_seconds": eval_seconds,
            "train_images_seen": progress.images_seen,
            # Compute so far (cumulative). Energy is measured for the whole run: null until summary.json.
            **self._compute(progress, progress.compute_pieces + [tracker.summary()]),
            "best": is_best,
        }
        if dinfo.main:
            weights = "ema" if self.task.has_ema() else "raw"
            meta = {"epoch": str(progress.epoch + 1), "weights": weights,
                    "clean_acc": _dumps(clean), "pgd_robust_acc": _dumps(robust)}
            save_weights(self.run_dir / "last.safetensors", self._eval_model(), cfg, **meta)
            if is_best:
                save_weights(self.run_dir / "best.safetensors", self._eval_model(), cfg, **meta)
            self._append_metrics(row)
            record_epoch(cfg, row["epoch"], row)
            parts = [f"epoch {progress.epoch + 1}/{cfg.epochs}", f"loss {row['train_loss']:.4f}"]
            if row["train_adv_acc"] is not None:
                parts.append(f"train adv {row['train_adv_acc']:.1f}%")
            if row["train_clean_acc"] is not None:
                parts.append(f"train clean {row['train_clean_acc']:.1f}%")
            if clean is not None:
                parts.append(f"test clean {clean:.1f}%")
            if robust is not None:
                parts.append(f"pgd{cfg.eval_attack_steps} {robust:.1f}%")
            parts.append(f"{row['images_per_second']:.0f} img/s")
            if cfg.progress:
                print(" | ".join(parts), file=sys.stderr, flush=True)

    def _compute(self, progress: _Progress, pieces: list) -> dict:
        """FLOPs / time / energy / dollars of the run so far (``robustscale.compute.summarize_run_compute``)."""
        from .compute import add_summaries, summarize_run_compute

        return summarize_run_compute(self.step_flops, progress.num_updates, self.cfg.batch_size, progress.eval_flops,
                                     add_summaries(*pieces), self.cost_model, device_type=self.cfg.device_type,
                                     images_seen=progress.images_seen)

    def _finish(self, progress: _Progress, status: str, tracker, pieces: list, error: str | None = None) -> dict:
        from . import __version__
        from .models import count_parameters

        cfg = self.cfg
        compute = self._compute(progress, pieces)
        summary = {
            "name": cfg.name, "source": "robustscale", "status": status, "config_hash": cfg.config_hash(),
            "dataset": cfg.dataset, "model": cfg.model, "model_parameters": count_parameters(_inner(self.model)),
            "method": cfg.method.value, "attack_steps": cfg.attack_steps if cfg.method in (Method.PGD, Method.TRADES)
            else (1 if cfg.method is Method.FGSM_RS else 0),
            "eps": cfg.eps, "norm": cfg.norm.value, "epochs": cfg.epochs,
            "synthetic_data": bool(cfg.generated_data) and cfg.generated_fraction > 0,
            "train_images": self.train_images, "train_images_seen": progress.images_seen,
            **{k: compute[k] for k in ("train_flops", "train_flops_per_image", "eval_flops", "wall_seconds",
                                       "device_hours", "device_name", "device_count", "energy_kwh", "emissions_kg",
                                       "electricity_usd", "cloud_usd_low", "cloud_usd_high")},
            "clean_acc": self.last_clean, "pgd_robust_acc": self.last_robust,
            "aa_robust_acc": None, "aa_n_examples": None, "collapsed": None,
            # details
            "epochs_done": progress.epoch, "optimizer_steps": progress.num_updates,
            "best_epoch": progress.best_epoch, "best_pgd_robust_acc": progress.best_robust_acc,
            "attack_flops_fraction": compute["attack_flops_fraction"], "device_type": compute["device_type"],
            "electricity_basis": compute["electricity_basis"], "step_flops": self.step_flops.to_dict(),
            "eval_subset": cfg.eval_subset, "eval_attack_steps": cfg.eval_attack_steps,
            "ema": cfg.ema_decay is not None, "compiled": self.compiled, "world_size": self.dinfo.world,
            "run_dir": str(self.run_dir),
            "robustscale_version": __version__, "error": error,
        }
        if self.dinfo.main:
            _write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
        return summary


def _unwrap_ddp(module):
    from torch import nn

    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
