"""The two step implementations the benchmark times: ours (the step ``robustscale train`` runs) and the
common public one (the baseline)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..attacks import uniform_start
from ..compute import count_flops
from ..config import Method, Norm, TrainConfig
from ..data.info import dataset_info
from ..errors import UserError
from ..tasks import create_task
from ..train import build_step, should_compile

__all__ = ["OursStep", "BaselineStep", "BASELINE_METHODS", "StepFn", "count_step_flops"]

# Methods the baseline implements (FGSM-RS is one-step PGD from a random start).
BASELINE_METHODS = (Method.PGD, Method.FGSM_RS)

StepFn = Callable[[Any, Any], dict]


class OursStep:
    """One robustscale training step: :class:`robustscale.train.TrainStep`, the very function ``train`` runs
    (task forward with the attack, backward, gradient clipping, optimizer, LR scheduler and EMA steps).

    Args:
        cfg: the run config (method, attack, ``amp``, ``channels_last``, ``compile``, optimiser, schedule).
        model: classifier taking [0,1] pixels; moved to ``device`` (and to channels-last memory
            format when ``cfg.channels_last``) in place.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        generator: RNG of the attacks' random starts (on ``device`` or the CPU).
    Call: ``step(x, y)`` with x (N, C, H, W) in [0,1], y (N,) int64 -> the task's output dict
    (``loss``, ``output``, ``x_adv``, ...).
    """

    name = "ours"

    def __init__(self, cfg: TrainConfig, model, device="cpu", generator=None):
        self.cfg = cfg
        self.device = torch.device(device)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.task = create_task(cfg, model, generator=generator)
        # The LR schedule of a full epoch of the dataset, as in train (its values do not change the timing).
        train_size = dataset_info(cfg.dataset).train_size or cfg.batch_size
        self.train_step = build_step(cfg, model, self.task, self.device, max(train_size // cfg.batch_size, 1))
        self.optimizer = self.train_step.optimizer
        # train_flops=None: a steady-state measurement, i.e. what a long run gets (`compile: auto` compiles those).
        self.compiled, self.compile_reason = should_compile(cfg, self.device.type, train_flops=None)
        if self.compiled:
            self.task.compile()
        self.updates = 0

    def __call__(self, x, y) -> dict:
        self.updates += 1
        return self.train_step(x, y, update=self.updates)


class BaselineStep:
    """PGD adversarial training the way common public code writes it (the reference point).

    Modelled on ``attack_pgd`` + the training loop of Rice et al. 2020 (``train_cifar.py``),
    which many later repositories copied:

    - each attack step runs ``loss.backward()``: autograd computes the gradient of every weight
      (then discarded by ``optimizer.zero_grad()``) besides the input gradient the attack uses;
    - an extra clean forward (no grad, attack mode) computes clean accuracy for the logs;
    - fp32, NCHW memory format, eager (no compile), mean-reduced cross-entropy.

    The attack is crafted in eval mode when ``cfg.attack_bn_eval`` (as Madry's and TRADES'
    code do), like ours. The random start is drawn with ``robustscale.attacks.uniform_start``
    from ``generator``, so both implementations start from the same point.
    Call: ``step(x, y)`` -> dict with ``loss``, ``output``, ``x_adv``, ``clean_output``.
    """

    name = "baseline"

    def __init__(self, cfg: TrainConfig, model, device="cpu", generator=None):
        if cfg.method not in BASELINE_METHODS:
            raise UserError(f"--baseline implements {', '.join(m.value for m in BASELINE_METHODS)} only, "
                            f"not method {cfg.method.value!r}; valid with --baseline: "
                            f"{', '.join(m.value for m in BASELINE_METHODS)}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.attack = cfg.attack_config()
        self.generator = generator
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)

    def attack_pgd(self, x, y):
        """l-inf / l2 PGD with ``loss.backward()`` in every step. Returns x_adv (N, C, H, W), detached."""
        a, model = self.attack, self.model
        eps, alpha, norm = a.eps, a.step_size, Norm(a.norm).value
        lower, upper = -x, 1 - x  # x + delta stays in [0, 1]
        if a.random_start:
            delta = uniform_start(x, eps, norm, self.generator)
        else:
            delta = torch.zeros_like(x)
        delta = torch.max(torch.min(delta, upper), lower)
        delta.requires_grad = True
        for _ in range(a.steps):
            loss = F.cross_entropy(model(x + delta), y)
            loss.backward()  # the waste: fills every parameter's .grad too
            g = delta.grad.detach()
            d = delta.data
            if norm == "linf":
                d = torch.clamp(d + alpha * torch.sign(g), min=-eps, max=eps)
            else:
                g_norm = g.flatten(1).norm(p=2, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                d = d + alpha * g / g_norm
                d = d * (eps / d.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)).clamp(max=1.0).view(-1, 1, 1, 1)
            delta.data = torch.max(torch.min(d, upper), lower)
            delta.grad.zero_()
        return torch.clamp(x + delta.detach(), 0, 1)

    def __call__(self, x, y) -> dict:
        model = self.model
        if self.cfg.attack_bn_eval:
            model.eval()
        with torch.no_grad():  # the logging forward: clean accuracy of the batch
            clean_output = model(x)
        x_adv = self.attack_pgd(x, y)
        model.train()
        output = model(x_adv)
        loss = F.cross_entropy(output, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss, "output": output, "x_adv": x_adv, "clean_output": clean_output}


def count_step_flops(step_factory: Callable[[], StepFn], input_size: Sequence[int], num_classes: int,
                     batch_size: int = 2) -> float:
    """FLOPs per image (2 x MACs, FlopCounterMode) of one call of the step ``step_factory()`` builds,
    on a random CPU batch of ``batch_size``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        step = step_factory()
        x = torch.rand(batch_size, *input_size)
        y = torch.randint(0, num_classes, (batch_size,))
        return count_flops(lambda: step(x, y)) / batch_size
