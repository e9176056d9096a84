"""Which values no run can use: ``validate(cfg)`` raises one UserError naming the first bad key.

It takes the config object (a ``TrainConfig``) as an argument: this module sits below the dataclass and never
imports it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from ..errors import UserError
from .vocab import SCHEDULERS, SGD_OPTS, SINGLE_STEP_DEFAULT_STEP, Method, Norm, Select, SelectSplit


def validate(cfg: Any) -> None:
    """Raise UserError on values no run can use."""
    def bad(key, why):
        raise UserError(f"invalid {key} {getattr(cfg, key)!r}: {why}")

    if not (0 <= cfg.eps <= 1):
        bad("eps", "must be in [0, 1] pixel units (e.g. 8/255)")
    if cfg.method is not Method.STANDARD and cfg.eps <= 0:
        bad("eps", f"must be > 0 for method {cfg.method.value}")
    if cfg.attack_steps < 1:
        bad("attack_steps", "must be >= 1")
    if cfg.step_size is not None and not (0 < cfg.step_size <= 1):
        bad("step_size", "must be in (0, 1] pixel units")
    if cfg.step_size_factor <= 0:
        bad("step_size_factor", "must be > 0")
    if cfg.trades_beta < 0:
        bad("trades_beta", "must be >= 0")
    if not (0 <= cfg.generated_fraction < 1):
        bad("generated_fraction", "must be in [0, 1)")
    if cfg.epochs < 1:
        bad("epochs", "must be >= 1")
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs >= max(cfg.epochs, 1) and cfg.warmup_epochs > 0:
        bad("warmup_epochs", f"must be in [0, epochs={cfg.epochs})")
    if cfg.batch_size < 1:
        bad("batch_size", "must be >= 1")
    if cfg.lr is not None and not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        bad("lr", "must be a positive finite number")
    if not (cfg.lr_base > 0 and math.isfinite(cfg.lr_base)):
        bad("lr_base", "must be a positive finite number")
    if cfg.ema_decay is not None and not (0 < cfg.ema_decay < 1):
        bad("ema_decay", "must be in (0, 1)")
    if cfg.ema_warmup and cfg.ema_decay is None:
        bad("ema_warmup", "needs ema_decay (there is no EMA to warm up)")
    if not (0 <= cfg.label_smoothing < 1):
        bad("label_smoothing", "must be in [0, 1)")
    for key in ("train_subset", "test_subset", "input_size"):
        v = getattr(cfg, key)
        if v is not None and v < 1:
            bad(key, "must be >= 1")
    if cfg.eval_subset < 0:
        bad("eval_subset", "must be >= 0 (0 disables per-epoch evaluation)")
    if cfg.eps_warmup_epochs < 0:
        bad("eps_warmup_epochs", "must be >= 0")
    if cfg.input_size is not None and str(cfg.dataset).lower() != "imagefolder":
        bad("input_size", f"only applies to dataset imagefolder ({cfg.dataset} has a fixed image size)")
    if cfg.method in SINGLE_STEP_DEFAULT_STEP and cfg.norm is not Norm.LINF:
        bad("norm", f"{cfg.method.value} is an l-inf attack; use method pgd for l2")
    validate_single_step(cfg, bad)
    if cfg.step_size is not None and cfg.step_size > 2 * cfg.eps and cfg.method is not Method.STANDARD:
        bad("step_size", f"is more than twice eps={cfg.eps:g}: every step would jump across the eps-ball")
    if cfg.sched not in SCHEDULERS:
        bad("sched", f"valid: {', '.join(SCHEDULERS)}")
    if not (0 <= cfg.momentum < 1):
        bad("momentum", "must be in [0, 1)")
    if cfg.nesterov and cfg.opt.lower() not in SGD_OPTS:
        bad("nesterov", f"applies to opt {' / '.join(SGD_OPTS)} only, not {cfg.opt!r}")
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        bad("weight_decay", "must be >= 0")
    if not (cfg.min_lr >= 0 and math.isfinite(cfg.min_lr)):
        bad("min_lr", "must be >= 0")
    if cfg.clip_grad is not None and not (cfg.clip_grad > 0):
        bad("clip_grad", "must be > 0 (or null to disable)")
    if cfg.mixup_alpha < 0 or cfg.cutmix_alpha < 0:
        bad("mixup_alpha" if cfg.mixup_alpha < 0 else "cutmix_alpha", "must be >= 0 (0 disables it)")
    if not (0 <= cfg.drop_rate < 1):
        bad("drop_rate", "must be in [0, 1)")
    if cfg.workers < 0:
        bad("workers", "must be >= 0")
    if cfg.eval_attack_steps < 0:
        bad("eval_attack_steps", "must be >= 0 (0: clean accuracy only)")
    if cfg.eval_batch_size < 1:
        bad("eval_batch_size", "must be >= 1")
    if cfg.micro_batch_size is not None and (cfg.micro_batch_size < 1
                                              or cfg.batch_size % cfg.micro_batch_size):
        bad("micro_batch_size", f"must be >= 1 and divide batch_size {cfg.batch_size} "
                                f"(batch_size = ranks x micro_batch_size x accumulation steps)")
    if cfg.eval_step_size_factor <= 0:
        bad("eval_step_size_factor", "must be > 0")
    validate_selection(cfg, bad)
    if cfg.log_every < 1:
        bad("log_every", "must be >= 1")
    if cfg.seed < 0:
        bad("seed", "must be >= 0")
    if cfg.name is not None and (not cfg.name.strip() or "/" in cfg.name or cfg.name in (".", "..")):
        bad("name", "must be a non-empty folder name without '/'")


def validate_single_step(cfg: Any, bad: Callable[[str, str], None]) -> None:
    """The N-FGSM / GradAlign knobs and the catastrophic-overfitting thresholds."""
    if not (math.isfinite(cfg.nfgsm_k) and cfg.nfgsm_k >= 0):
        bad("nfgsm_k", "must be a finite number >= 0 (noise U[-k eps, k eps]; 0: none; de Jorge et al.: 2)")
    if not (math.isfinite(cfg.grad_align_lambda) and cfg.grad_align_lambda >= 0):
        bad("grad_align_lambda", "must be a finite number > 0 (0.2 at CIFAR-10 8/255)")
    if cfg.method is Method.GRAD_ALIGN and cfg.grad_align_lambda == 0:
        bad("grad_align_lambda", "must be > 0 for method grad_align (0 leaves plain FGSM, which collapses)")
    if not (0 < cfg.collapse_ratio < 1):
        bad("collapse_ratio", "must be in (0, 1), e.g. 0.5")
    if not (0 < cfg.collapse_gap <= 100):
        bad("collapse_gap", "must be in (0, 100] percentage points")


def validate_selection(cfg: Any, bad: Callable[[str, str], None]) -> None:
    """The validation split fits the training subset; ``select: best`` has a split and a metric to use."""
    if cfg.val_size is not None and cfg.val_size < 0:
        bad("val_size", "must be >= 0 (0: no validation split; null: min(1000, 10% of the training images))")
    if cfg.val_size and cfg.train_subset is not None and cfg.val_size > cfg.train_subset:
        bad("val_size", f"is larger than the training subset (train_subset {cfg.train_subset}); "
                        f"use at most {cfg.train_subset}, or null for the default")
    if cfg.select is Select.LAST:
        return
    where = f"select best on {cfg.select_split.value}"
    if cfg.select_split is SelectSplit.VAL and cfg.val_size == 0:
        bad("val_size", f"leaves {where} nothing to measure; set val_size > 0, select last, "
                        f"or select_split test")
    if cfg.select_split is SelectSplit.TEST and cfg.eval_subset == 0:
        bad("eval_subset", f"leaves {where} nothing to measure; set eval_subset > 0 or select last")
    if cfg.method is not Method.STANDARD and cfg.eval_attack_steps == 0:
        bad("eval_attack_steps", f"cannot produce {cfg.selection_metric}, the metric {where} uses "
                                 f"for method {cfg.method.value}; set eval_attack_steps >= 1 or select last")
