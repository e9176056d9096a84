"""The training step: what ``robustscale train`` runs per batch and ``robustscale bench`` times.

:func:`build_step` makes the optimizer, the LR scheduler, the loss scaler, autocast and the weight EMA
of a config; :class:`TrainStep` runs one update with them: the task's forward (the attack crafts its
inputs there), backward, gradient clipping, optimizer step, scheduler step, EMA update.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

from ..config import Amp, TrainConfig
from .backends import autocast as make_autocast

__all__ = ["TrainStep", "build_step", "eps_at"]


@dataclasses.dataclass
class TrainStep:
    """One optimizer update of ``task``: ``step(x, y, update=n)`` -> the task's output dict.

    ``task``: a ``robustscale.tasks`` task (forward + loss, attack inside); ``params``: the parameters
    clipped to ``clip_grad`` (None: no clipping); ``scaler``: fp16 loss scaling (None otherwise).
    """

    task: Any
    optimizer: Any
    scheduler: Any = None
    scaler: Any = None
    autocast: Any = dataclasses.field(default_factory=contextlib.nullcontext)
    clip_grad: float | None = None
    params: list = dataclasses.field(default_factory=list)
    channels_last: bool = False

    def __call__(self, x, y, update: int, before_update: Callable[[dict], None] | None = None) -> dict:
        """Forward, backward and update on the batch (x (N, C, H, W) in [0,1], y (N,) or soft (N, K)).

        ``update``: the number of this optimizer update (1-based, all epochs): the scheduler and the
        EMA step on it. ``before_update(out)`` runs after the forward and before any weight changes
        (the loop checks the loss for NaN there).
        """
        import torch

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            out = self.task(x, y)
        if before_update is not None:
            before_update(out)
        self._update(out["loss"])
        if self.scheduler is not None:
            self.scheduler.step_update(update)
        self.task.update_ema(step=update)
        return out

    def _update(self, loss) -> None:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
            self.optimizer.step()


def build_step(cfg: TrainConfig, model, task, device, updates_per_epoch: int) -> TrainStep:
    """The :class:`TrainStep` of ``cfg`` for ``model`` / ``task`` (timm optimizer and scheduler factories,
    per-update LR schedule over ``cfg.epochs`` epochs of ``updates_per_epoch`` updates; EMA set up on
    ``task`` when ``cfg.ema_decay``)."""
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    if cfg.ema_decay is not None:
        task.setup_ema(decay=cfg.ema_decay)
    lr = cfg.learning_rate
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, min_lr=cfg.min_lr,
        warmup_lr=min(1e-5, lr), step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    device = torch.device(device)
    # fp16 needs loss scaling; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler(device.type) if cfg.amp is Amp.FP16 else None
    return TrainStep(task=task, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                     autocast=make_autocast(cfg, device), clip_grad=cfg.clip_grad,
                     params=[p for p in model.parameters() if p.requires_grad], channels_last=bool(cfg.channels_last))


def eps_at(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear eps ramp over the first ``eps_warmup_epochs`` epochs (per step, never 0)."""
    if cfg.eps_warmup_epochs <= 0:
        return cfg.eps
    done = epoch * steps_per_epoch + step + 1
    return cfg.eps * min(1.0, done / (cfg.eps_warmup_epochs * steps_per_epoch))
