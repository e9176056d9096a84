"""Preparing a run: its name and folder, then the parts the loop runs (data, model, task, step, optimizer,
the compile decision). :class:`RunSetup` is a part of :class:`robustscale.train.loop.Trainer`."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch._dynamo
from timm.optim import list_optimizers

from .. import rundir
from ..compute import measure_step_flops
from ..config import SINGLE_STEP_DEFAULT_STEP, Amp, Compile, Method, SelectSplit, TrainConfig
from ..cost import CostModel
from ..data import build_mixup, build_train_loader, load_eval_tensors, load_val_tensors
from ..data.info import check_eval_subset, dataset_info
from ..errors import UserError, one_of
from ..models import check_model_name
from ..tasks import create_task
from .backends import configure_backends, should_compile
from .distributed import unwrap_ddp
from .state import seed_everything
from .step import SlotZeroRunningStats, build_step

__all__ = ["run_name", "RunSetup"]


def run_name(cfg: TrainConfig) -> str:
    """Default run name: ``<model>-<dataset>-<method><steps>-<hash8>``, e.g. ``wide_resnet28_10-cifar10-pgd10-1a2b3c4d``."""
    if cfg.method is Method.STANDARD:
        method = "standard"
    elif cfg.method in SINGLE_STEP_DEFAULT_STEP:
        method = cfg.method.value
    else:
        method = f"{cfg.method.value}{cfg.attack_steps}"
    return f"{cfg.model}-{cfg.dataset}-{method}-{cfg.config_hash()[:8]}"


class RunSetup:
    """The Trainer's setup: the run folder, the checks that fail before any compute, and the parts of the run.

    Reads ``cfg``, ``dinfo``, ``resume_dir`` and ``plan`` of the Trainer; sets the attributes the loop uses."""

    def _prepare_run_dir(self) -> Path:
        cfg = self.cfg
        if self.resume_dir is not None:
            self.cfg = cfg.replace(name=cfg.name or self.resume_dir.name)
            return self.resume_dir
        if cfg.name is None:
            self.cfg = cfg = cfg.replace(name=run_name(cfg))
        run_dir = Path(cfg.output_dir) / cfg.name
        if self.dinfo.main and ((run_dir / rundir.STATE).exists() or (run_dir / rundir.SUMMARY).exists()):
            raise UserError(f"run directory {run_dir} already holds a run; continue it with --resume {run_dir} "
                            f"or pick another --name")
        return run_dir

    def _check_setup(self) -> None:
        cfg, dinfo = self.cfg, self.dinfo
        check_model_name(cfg.model)
        check_eval_subset(cfg.dataset, cfg.eval_subset)
        one_of(cfg.opt.lower(), list_optimizers(), "opt")
        if cfg.amp is Amp.FP16 and dinfo.device.type == "cpu":
            raise UserError("amp fp16 needs a GPU; use --amp bf16 on CPU")

    def _setup_data(self) -> tuple[int, tuple]:
        """Train loader, the per-epoch check's images, mixup; returns (num_classes, image_shape).

        The per-epoch check (and ``select: best``) runs on ``cfg.select_split``: the validation split carved
        from the training images (default), or, only when asked, the first ``eval_subset`` test images.
        """
        cfg, dinfo = self.cfg, self.dinfo
        info = dataset_info(cfg.dataset)
        plan = self.plan
        self.loader = build_train_loader(cfg, dinfo.rank, dinfo.world, micro_batch_size=plan.micro_batch_size)
        real = self.loader.dataset.real
        self.train_images = len(self.loader.dataset)
        if cfg.batch_size > len(real):  # an "epoch" would be several passes, billed as one
            raise UserError(f"batch_size {cfg.batch_size} is larger than the {len(real)} training images "
                            f"(after train_subset / val_size); lower --batch-size or use more training images")
        self.steps_per_epoch = self.loader.sampler.steps_per_epoch
        num_classes = info.num_classes or len(real.classes)
        image_shape = tuple(getattr(real, "image_shape", None) or info.input_size)
        self.x_eval = self.y_eval = self.eval_split = None
        if cfg.select_split is SelectSplit.VAL:
            x, y = load_val_tensors(cfg)
            if len(x):
                self.x_eval, self.y_eval, self.eval_split = x, y, "val"
        elif cfg.eval_subset > 0:  # load_eval_tensors refuses more images than the test set has
            self.x_eval, self.y_eval = load_eval_tensors(cfg.dataset, cfg.eval_subset, cfg.data_dir, cfg.download,
                                                         input_size=cfg.input_size)
            self.eval_split = "test"
        self.mixup = build_mixup(cfg, num_classes, dinfo.world, micro_batch_size=plan.micro_batch_size)
        return num_classes, image_shape

    def _setup(self) -> None:
        cfg, dinfo = self.cfg, self.dinfo
        self._check_setup()
        configure_backends(cfg, dinfo.device)
        num_classes, image_shape = self._setup_data()
        seed_everything(cfg.seed)  # same initial weights on every rank
        model = rundir.build_model(cfg, num_classes, image_shape[0]).to(dinfo.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.num_classes = model, num_classes
        self.task = create_task(cfg, model, soft_targets=self.mixup is not None)
        self.step = build_step(cfg, model, self.task, dinfo.device, self.steps_per_epoch)
        self.optimizer, self.autocast = self.step.optimizer, self.step.autocast
        # FLOPs of one training step, measured once (meta tensors: no compute spent); prices checked up front.
        self.step_flops = measure_step_flops(model, cfg, image_shape)
        self.cost_model = CostModel.from_yaml(preset=cfg.price_preset)
        self._setup_compile()
        if dinfo.world > 1:
            self.task.prepare_distributed(device_ids=[dinfo.local_rank] if dinfo.device.type == "cuda" else None)
        # BatchNorm statistics independent of the batch's spread; one slot per step needs nothing.
        self.running_stats = SlotZeroRunningStats(model, dinfo) if dinfo.world * self.plan.accumulation > 1 else None
        # Randomness outside the steps differs by rank, reproducibly (each step's slots seed their own: seed_slot).
        seed_everything(cfg.seed + 1_000_003 * (dinfo.rank + 1))

    def _setup_compile(self) -> None:
        cfg, dinfo = self.cfg, self.dinfo
        rank_images = cfg.epochs * self.steps_per_epoch * self.plan.per_rank
        self.compiled, self.compile_reason = should_compile(cfg, dinfo.device.type,
                                                            rank_images * self.step_flops.train_step_flops)
        if self.compiled:
            if cfg.compile is Compile.AUTO:
                torch._dynamo.config.suppress_errors = True  # auto: a graph that fails to compile runs eagerly
            self.task.compile()
        if dinfo.main and cfg.progress:
            print(self.compile_reason, file=sys.stderr, flush=True)

    def _eval_model(self):
        if self.task.has_ema():
            return self.task.get_trainable_module(ema=True).module
        task = self.task
        model = task.attack_model if hasattr(task, "attack_model") else unwrap_ddp(task.trainable_module)
        # Eager for the per-epoch check: a compiled model would recompile for the eval batch size (measured:
        # 5.5 s eager vs 18.8 s compiled for PGD-10 on 256 images of WRN-16-2), for a few seconds of work.
        return getattr(model, "_orig_mod", model)
