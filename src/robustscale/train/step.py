"""The training step: what ``robustscale train`` runs per batch and ``robustscale bench`` times.

:func:`build_step` makes the optimizer, the LR scheduler, the loss scaler, autocast and the weight EMA
of a config; :class:`TrainStep` runs one update with them: the task's forward (the attack crafts its
inputs there) and backward on each micro-batch (gradients accumulated, DDP's all-reduce on the last),
gradient clipping, optimizer step, scheduler step, EMA update. :class:`SlotZeroRunningStats` makes the
BatchNorm statistics a step leaves behind independent of how its batch was spread over ranks and passes.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Sequence

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..config import SGD_OPTS, Amp, TrainConfig
from .backends import autocast as make_autocast
from .distributed import Dist, broadcast_

__all__ = ["TrainStep", "SlotZeroRunningStats", "build_step", "eps_at"]


class SlotZeroRunningStats:
    """BatchNorm running statistics of a step spread over several slots (ranks x micro-batches).

    Every slot's forward (the attack, crafted with BN in eval mode, included) sees the statistics of the
    step's start, and the step leaves them as its first slot (rank 0's first micro-batch) updated them,
    on every rank. So a step's statistics do not depend on how many ranks and passes it used, and ranks
    never disagree (DDP's own buffer broadcast happens only at the next DDP forward, after the attack).
    One process with one pass needs none of this: its single slot is the first.
    """

    def __init__(self, model, dinfo: Dist):
        self.dinfo = dinfo
        self.buffers = [b for m in model.modules() if getattr(m, "running_mean", None) is not None
                        for b in (m.running_mean, m.running_var, getattr(m, "num_batches_tracked", None))
                        if b is not None]
        self._start: list | None = None
        self._kept: list | None = None

    def begin(self) -> None:
        self._start = [b.detach().clone() for b in self.buffers]
        self._kept = None

    def after_pass(self, micro: int) -> None:
        """After micro-batch ``micro``'s pass on this rank: keep the first slot's update, restore the start."""
        if self.dinfo.rank == 0 and micro == 0:
            self._kept = [b.detach().clone() for b in self.buffers]
        for b, s in zip(self.buffers, self._start):
            b.copy_(s)

    def end(self) -> None:
        """Set the first slot's statistics on every rank (a collective)."""
        with torch.no_grad():
            if self._kept is not None:
                for b, k in zip(self.buffers, self._kept):
                    b.copy_(k)
            broadcast_(self.buffers, self.dinfo)
        self._start = self._kept = None


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
        EMA step on it. ``before_update(out)`` runs after the backward and before any weight changes
        (the loop checks the loss for NaN there).
        """
        outs: list[dict] = []
        self.accumulate([lambda: (x, y)], update, on_output=lambda k, out: outs.append(out),
                        before_update=(lambda: before_update(outs[0])) if before_update is not None else None)
        return outs[0]

    def accumulate(self, batches: Sequence[Callable[[], tuple]], update: int, *,
                   on_output: Callable[[int, dict], None] | None = None,
                   before_update: Callable[[], None] | None = None,
                   no_sync: Callable[[], Any] | None = None, running_stats: SlotZeroRunningStats | None = None) -> None:
        """One optimizer update over micro-batches: ``batches[k]()`` -> ``(x, y)``; each loss is divided by
        their number, so the gradient is that of the mean loss over all of them (equal sizes).

        ``on_output(k, out)`` sees each micro-batch's task output; ``before_update()`` runs once every
        backward is done and before the weights change; ``no_sync``: DDP's context that skips the gradient
        all-reduce (entered for every micro-batch but the last).
        """
        n = len(batches)
        self.optimizer.zero_grad(set_to_none=True)
        if running_stats is not None:
            running_stats.begin()
        for k, batch in enumerate(batches):
            x, y = batch()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with no_sync() if no_sync is not None and k < n - 1 else contextlib.nullcontext():
                with self.autocast:
                    out = self.task(x, y)
                loss = out["loss"] / n if n > 1 else out["loss"]
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if running_stats is not None:  # after the backward, which reads the buffers the forward saw
                running_stats.after_pass(k)
            if on_output is not None:
                on_output(k, out)
            del out, loss
        if before_update is not None:
            before_update()
        if running_stats is not None:
            running_stats.end()
        self._update()
        if self.scheduler is not None:
            self.scheduler.step_update(update)
        self.task.update_ema(step=update)

    def _update(self) -> None:
        """Clip and step on the accumulated gradients."""
        if self.scaler is not None:
            if self.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
            self.optimizer.step()


def build_step(cfg: TrainConfig, model, task, device, updates_per_epoch: int) -> TrainStep:
    """The :class:`TrainStep` of ``cfg`` for ``model`` / ``task`` (timm optimizer and scheduler factories,
    per-update LR schedule over ``cfg.epochs`` epochs of ``updates_per_epoch`` updates; EMA set up on
    ``task`` when ``cfg.ema_decay``)."""
    if cfg.ema_decay is not None:
        task.setup_ema(decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
    lr = cfg.learning_rate
    # The recipe as written: `opt: sgd` is classical momentum unless `nesterov: true` (timm's registry alone
    # makes `sgd` Nesterov), and weight decay reaches every parameter unless `weight_decay_1d: false`.
    extra = {"nesterov": cfg.nesterov} if cfg.opt.lower() in SGD_OPTS else {}
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                    filter_bias_and_bn=not cfg.weight_decay_1d, **extra)
    # Warm-up as a prefix: linear to the peak lr over warmup_epochs, then the schedule over the remaining
    # epochs (timm's default overlays the warm-up on the cosine, whose peak is then never reached).
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs - cfg.warmup_epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_prefix=True, min_lr=cfg.min_lr, warmup_lr=min(1e-5, lr), step_on_epochs=False,
        updates_per_epoch=updates_per_epoch)
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
