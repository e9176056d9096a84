"""The training methods: standard, PGD-AT (Madry et al.), TRADES (Zhang et al.), and the single-step
FGSM-RS (Wong et al.), N-FGSM (de Jorge et al.) and GradAlign (Andriushchenko & Flammarion).

Attack steps run on the un-wrapped model (no DDP: an attack forward must neither sync buffers nor
arm DDP's gradient reducer), with parameters' ``requires_grad`` switched off and, when
``bn_eval`` (``TrainConfig.attack_bn_eval``), in eval mode so that BatchNorm uses its running
statistics and does not update them with adversarial-in-progress batches.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Dict, Iterator, Optional, Union

import torch
from torch import nn
from timm.task import ClassificationTask
from timm.utils import unwrap_model

from ..attacks import fgsm, fgsm_rs, grad_align_penalty, n_fgsm, pgd, trades_inner_max, trades_kl
from ..config import AttackConfig, Method, TrainConfig

__all__ = ["AdversarialTask", "StandardTask", "PGDTask", "TRADESTask", "FGSMRSTask", "NFGSMTask", "GradAlignTask",
           "TASKS", "create_task"]


@contextlib.contextmanager
def _eval_mode(module: nn.Module, enabled: bool) -> Iterator[None]:
    """Put ``module`` in eval mode for the block (if ``enabled`` and it is training), then restore."""
    if not (enabled and module.training):
        yield
        return
    module.eval()
    try:
        yield
    finally:
        module.train()


class StandardTask(ClassificationTask):
    """Clean training (no attack). Same interface as the adversarial tasks; ``set_eps`` is a no-op."""

    method = Method.STANDARD

    def set_eps(self, eps: float) -> None:
        return None

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, Any]:
        output = self.trainable_module(input)
        return {"loss": self.criterion(output, target), "output": output, "x_adv": None, "clean_output": output}


class AdversarialTask(ClassificationTask):
    """Base class of the adversarial methods.

    Args:
        model: classifier taking [0,1] pixels (e.g. ``robustscale.models.NormalizedModel``).
        attack: eps / steps / step_size / norm / random_start / trades_beta (pixel units).
        bn_eval: craft attacks with the model in eval mode (BatchNorm running statistics).
        criterion, criterion_kwargs: the training loss (timm's ``create_classification_loss`` kwargs,
            e.g. ``dict(smoothing=0.1)``).
        generator: RNG for the attacks' random starts (None: the global RNG).
    """

    method: Method

    def __init__(
        self,
        model: nn.Module,
        attack: AttackConfig,
        bn_eval: bool = True,
        criterion: Optional[Union[nn.Module, Callable]] = None,
        criterion_kwargs: Optional[Dict[str, Any]] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        verbose: bool = False,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__(model, criterion=criterion, criterion_kwargs=criterion_kwargs, device=device, dtype=dtype,
                         verbose=verbose)
        if attack.eps <= 0 or attack.steps < 1 or attack.step_size <= 0:
            raise ValueError(f"invalid attack config {attack}")
        self.attack = dataclasses.replace(attack)
        self._base_eps, self._base_step = attack.eps, attack.step_size
        self.bn_eval = bn_eval
        self.generator = generator

    # ------------------------------------------------------------------ attack configuration
    @property
    def eps(self) -> float:
        return self.attack.eps

    def set_eps(self, eps: float) -> None:
        """Set the attack radius (eps warm-up); the step size scales with it."""
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.attack.eps = float(eps)
        self.attack.step_size = self._base_step * float(eps) / self._base_eps

    @property
    def attack_model(self) -> nn.Module:
        """The model the attacks run on: the trainable module without its DDP wrapper (compiled if it was:
        ``compile()`` (timm's) compiles it, and its eval / no-parameter-grad variant is traced on first use)."""
        module = self.trainable_module
        return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module

    def craft(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples for a batch, in the attack mode (eval BN if ``bn_eval``)."""
        model = self.attack_model
        with _eval_mode(model, self.bn_eval):
            return self._craft(model, x, y)

    def _craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        return {"eps": self.attack.eps}

    def load_task_state(self, state, strict: bool = True, module=None, ema: bool = False) -> None:
        if state and "eps" in state:
            self.set_eps(state["eps"])


class PGDTask(AdversarialTask):
    """PGD adversarial training (Madry et al. 2018): the loss is on adversarial examples only."""

    method = Method.PGD

    def _craft(self, model, x, y):
        a = self.attack
        return pgd(model, x, y, a.eps, a.step_size, a.steps, norm=a.norm.value, random_start=a.random_start,
                   generator=self.generator)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, Any]:
        x_adv = self.craft(input, target)
        output = self.trainable_module(x_adv)
        return {"loss": self.criterion(output, target), "output": output, "x_adv": x_adv}


class FGSMRSTask(PGDTask):
    """FGSM with random start (Wong et al. 2020): one l-inf step of 1.25 eps from a uniform start."""

    method = Method.FGSM_RS

    def _craft(self, model, x, y):
        return fgsm_rs(model, x, y, self.attack.eps, self.attack.step_size, generator=self.generator)


class NFGSMTask(PGDTask):
    """N-FGSM (de Jorge et al. 2022): one signed step of alpha from ``x + U[-k eps, k eps]``, no projection."""

    method = Method.N_FGSM

    def _craft(self, model, x, y):
        a = self.attack
        return n_fgsm(model, x, y, a.eps, a.step_size, k=a.nfgsm_k, generator=self.generator)


class GradAlignTask(AdversarialTask):
    """GradAlign (Andriushchenko & Flammarion 2020): ``CE(f(x_fgsm), y) + lambda (1 - cos)``.

    The FGSM attack (zero init, step alpha, default eps) also yields the clean input gradient; the penalty
    takes the second gradient at ``x + U[-eps, eps]`` with a graph, so ``loss.backward()`` runs a double
    backward. Both gradients are taken in the attack mode (eval BN if ``bn_eval``; the reference keeps
    the model in train mode throughout), the penalty's on the eager model without DDP.
    """

    method = Method.GRAD_ALIGN

    def _craft(self, model, x, y):
        return fgsm(model, x, y, self.attack.eps, self.attack.step_size)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, Any]:
        a = self.attack
        model = self.attack_model
        with _eval_mode(model, self.bn_eval):
            x_adv, grad_clean = fgsm(model, input, target, a.eps, a.step_size, return_grad=True)
        output = self.trainable_module(x_adv)
        loss_adv = self.criterion(output, target)
        eager = unwrap_model(model)  # torch.compile cannot differentiate a graph twice
        with _eval_mode(eager, self.bn_eval):
            penalty, cos = grad_align_penalty(eager, input, target, a.eps, grad_clean, generator=self.generator)
        loss = loss_adv + a.grad_align_lambda * penalty
        return {"loss": loss, "output": output, "x_adv": x_adv, "loss_adv": loss_adv.detach(),
                "grad_align_penalty": penalty.detach(), "grad_align_cos": cos.mean()}


class TRADESTask(AdversarialTask):
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``.

    The clean forward (train mode, with grad) runs first; its detached logits are the KL target of the
    inner maximisation, so no separate clean forward is spent on the attack. (The reference recomputes
    the clean prediction in eval mode at every attack step; with ``bn_eval`` the target here is the
    train-mode prediction, i.e. the very distribution the outer KL term compares against.)
    The robust term is averaged over the batch (``batchmean``) as in the reference.
    """

    method = Method.TRADES

    def _craft(self, model, x, y, clean_logits=None):
        a = self.attack
        return trades_inner_max(model, x, a.eps, a.step_size, a.steps, norm=a.norm.value, generator=self.generator,
                                clean_logits=clean_logits)

    def craft(self, x, y, clean_logits=None):
        model = self.attack_model
        with _eval_mode(model, self.bn_eval):
            return self._craft(model, x, y, clean_logits)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, Any]:
        clean_output = self.trainable_module(input)
        x_adv = self.craft(input, target, clean_logits=clean_output.detach())
        output = self.trainable_module(x_adv)
        loss_natural = self.criterion(clean_output, target)
        loss_robust = trades_kl(output, clean_output, reduction="batchmean")
        loss = loss_natural + self.attack.trades_beta * loss_robust
        return {"loss": loss, "output": output, "x_adv": x_adv, "clean_output": clean_output,
                "loss_natural": loss_natural.detach(), "loss_robust": loss_robust.detach()}


TASKS: dict[Method, type] = {Method.STANDARD: StandardTask, Method.PGD: PGDTask, Method.TRADES: TRADESTask,
                             Method.FGSM_RS: FGSMRSTask, Method.N_FGSM: NFGSMTask, Method.GRAD_ALIGN: GradAlignTask}


def create_task(cfg: TrainConfig, model: nn.Module, soft_targets: bool = False,
                generator: Optional[torch.Generator] = None) -> ClassificationTask:
    """The training task of ``cfg.method`` around ``model``.

    Args:
        cfg: run config (method, eps, attack_steps, step size rule, norm, trades_beta, attack_bn_eval,
            label_smoothing).
        model: classifier taking [0,1] pixels, already on its device.
        soft_targets: targets come as (N, K) distributions (Mixup / CutMix, which apply the smoothing).
        generator: RNG for the attacks' random starts (None: global RNG).
    """
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    criterion_kwargs = {"smoothing": cfg.label_smoothing, "soft_targets": soft_targets}
    if cfg.method is Method.STANDARD:
        return StandardTask(model, criterion_kwargs=criterion_kwargs, device=device, verbose=False)
    return TASKS[cfg.method](model, cfg.attack_config(), bn_eval=cfg.attack_bn_eval,
                             criterion_kwargs=criterion_kwargs, device=device, verbose=False, generator=generator)
