"""Measured FLOPs of a training step, per image, next to the 2024 study's analytic convention.

Everything is counted by ``torch.utils.flop_counter.FlopCounterMode`` on what autograd really
runs: ``2 x MACs`` of every convolution and matrix product (element-wise ops, norms and
activations count 0, as in every FLOP convention of this literature). Counts are per image:
the measurement batch's total divided by its size.

Parts of a step (F = forward):

- ``forward_flops``: one forward pass.
- ``input_backward_flops``: the backward of an attack step, which asks autograd for the input
  gradient only (``torch.autograd.grad`` w.r.t. the perturbation): no weight-gradient kernels
  run, so it is ~1 x F (every layer's input gradient, the first layer's included).
- ``full_backward_flops``: the training backward (``loss.backward()`` on a detached input):
  weight gradients of every layer plus input gradients of every layer but the first, ~2 x F.
- ``attack_step_flops`` = forward + input-only backward (~2 x F, not the 3 x F the 2024 study
  assumed).
- ``train_step_flops``: one real step of the training task (``robustscale.tasks.create_task``:
  ``task(x, y)["loss"].backward()``), measured. For PGD-K it equals
  ``F (K+1) + input_backward K + full_backward``; for TRADES-K
  ``F (K+2) + input_backward K + 2 full_backward`` (clean and adversarial branches both
  backpropagate); FGSM-RS and N-FGSM are PGD with K=1; standard is ``F + full_backward``;
  GradAlign is FGSM (K=1) plus its penalty: ``F 3 + input_backward 2 + full_backward +
  double_backward``.
- ``double_backward_flops`` (GradAlign only, else 0): the backward of GradAlign's penalty, whose
  input gradient was taken with ``create_graph=True``: through that input gradient (the double
  backward proper) and through the forward to the weights; measured as the FLOPs of computing the
  penalty and backpropagating it, minus its forward and input backward.
- ``analytic_train_step_flops``: the 2024 study's convention from the same F:
  ``3F`` (standard), ``3F (K+2)`` (PGD-K), ``3F (K+3)`` (TRADES-K), ``3F (1+2)`` (FGSM-RS, and
  N-FGSM), so our runs and theirs can share one compute axis. The convention has no term for a
  double backward: GradAlign is counted ``3F (1+3)`` (its second input gradient as one more attack
  step), which is why its measured / analytic ratio is the highest.

The step is measured on the meta device (shapes only, no arithmetic: seconds even for
WRN-70-16); if the model or task cannot run on meta, on a real CPU batch of ``batch_size``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..attacks import grad_align_penalty
from ..config import SINGLE_STEP_DEFAULT_STEP, Method, TrainConfig
from ..errors import UserError
from ..tasks import create_task

__all__ = ["StepFlops", "measure_step_flops", "analytic_train_step_flops", "count_flops", "effective_attack_steps",
           "estimate_eval_flops", "clear_cache"]

_log = logging.getLogger(__name__)
DEFAULT_INPUT_SIZE = (3, 32, 32)
_CACHE: dict[tuple, "StepFlops"] = {}


@dataclass(frozen=True)
class StepFlops:
    """FLOPs per image of one training step and its parts (see the module docstring)."""

    model: str
    method: str
    attack_steps: int  # attack steps per training step actually run (0 standard, 1 single-step methods)
    input_size: tuple[int, int, int]  # (C, H, W)
    forward_flops: float
    input_backward_flops: float
    full_backward_flops: float
    attack_step_flops: float
    train_step_flops: float
    attack_flops_fraction: float  # attack_steps * attack_step_flops / train_step_flops
    analytic_train_step_flops: float  # the 2024 study's convention
    measured_on: str = "meta"  # "meta" or "cpu"
    batch_size: int = 2  # images in the measured batch
    double_backward_flops: float = 0.0  # GradAlign's penalty backward (0 for the other methods)

    @property
    def backward_flops(self) -> float:
        """Alias of ``full_backward_flops`` (the training backward)."""
        return self.full_backward_flops

    @property
    def measured_to_analytic(self) -> float:
        """``train_step_flops / analytic_train_step_flops``."""
        return self.train_step_flops / self.analytic_train_step_flops if self.analytic_train_step_flops else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        out["measured_to_analytic"] = self.measured_to_analytic
        return out


def effective_attack_steps(cfg: TrainConfig) -> int:
    """Attack steps one training step runs: 0 (standard), 1 (fgsm_rs, n_fgsm, grad_align), else ``attack_steps``."""
    if cfg.method is Method.STANDARD:
        return 0
    if cfg.method in SINGLE_STEP_DEFAULT_STEP:
        return 1
    return int(cfg.attack_steps)


def analytic_train_step_flops(method: Method | str, attack_steps: int, forward_flops: float) -> float:
    """The 2024 study's FLOPs per image of one training step from the forward FLOPs F.

    ``3F`` (standard), ``3F (K+2)`` (pgd), ``3F (K+3)`` (trades), ``3F (1+2)`` (fgsm_rs, n_fgsm): a
    backward counted as 2F, every attack step as a full forward + backward. ``3F (1+3)`` (grad_align):
    its second input gradient counted as one more attack step (the convention has no double backward).
    """
    method = Method(getattr(method, "value", method))
    if method is Method.STANDARD:
        factor = 1
    elif method is Method.PGD:
        factor = attack_steps + 2
    elif method is Method.TRADES:
        factor = attack_steps + 3
    elif method is Method.GRAD_ALIGN:
        factor = 1 + 3
    else:  # FGSM_RS, N_FGSM
        factor = 1 + 2
    return 3.0 * forward_flops * factor


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs (2 x MACs of conv / matmul) ``fn()`` dispatches, by FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def estimate_eval_flops(step: StepFlops, n_images: int, attack_steps: int = 0, restarts: int = 1,
                        fgsm: bool = False) -> float:
    """FLOPs of evaluating ``n_images`` with a clean forward plus, if ``attack_steps`` > 0, PGD.

    Per image: ``F`` (clean) + ``restarts x (attack_steps x attack_step + F)`` (attack, then the
    forward that scores the adversarial example), plus ``attack_step + F`` for an FGSM check on the
    same images (``fgsm``), from the measured parts of ``step``.
    """
    per_image = step.forward_flops
    if attack_steps > 0:
        per_image += restarts * (attack_steps * step.attack_step_flops + step.forward_flops)
    if fgsm:
        per_image += step.attack_step_flops + step.forward_flops
    return float(n_images) * per_image


def clear_cache() -> None:
    _CACHE.clear()


# ---------------------------------------------------------------------- measurement
def measure_step_flops(model, method_cfg: TrainConfig, input_size: Sequence[int] | None = None,
                       batch_size: int = 2, *, use_cache: bool = True, device: str = "meta") -> StepFlops:
    """Measure the FLOPs per image of one training step of ``method_cfg`` on ``model``.

    Args:
        model: the classifier (taking [0,1] pixels), on any device; a DDP / compiled wrapper is
            unwrapped. It is not modified: the measurement runs on a copy (meta tensors by default).
        method_cfg: TrainConfig; its method, attack_steps, step size rule, trades_beta and
            attack_bn_eval define the step (amp and compile are ignored: they do not change FLOPs).
        input_size: (C, H, W); default: the model's pretrained_cfg input size, else 3x32x32.
        batch_size: images in the measured batch (results are per image).
        use_cache: reuse a previous measurement of the same architecture / method / shape.
        device: ``"meta"`` (default; falls back to ``"cpu"`` when the model or task cannot run
            there) or ``"cpu"`` (real arithmetic on a copy).
    Raises:
        UserError: an input size the model cannot take, or a bad batch size.
    """
    model = _unwrap(model)
    if not isinstance(method_cfg, TrainConfig):  # a plain mapping of TrainConfig keys
        method_cfg = TrainConfig.from_dict(dict(method_cfg), source="method_cfg")
    cfg = method_cfg.replace(amp="off", compile=False)
    input_size = _check_input_size(input_size if input_size is not None else _default_input_size(model))
    if int(batch_size) < 1:
        raise UserError(f"invalid batch size {batch_size!r}: must be >= 1")
    batch_size = int(batch_size)
    key = (_architecture_key(model), cfg.model, cfg.method.value, effective_attack_steps(cfg), cfg.attack_bn_eval,
           input_size, batch_size)
    if use_cache and key in _CACHE:
        return _CACHE[key]

    result = None
    if device == "meta":
        try:
            result = _measure(_copy_to(model, "meta"), cfg, input_size, batch_size, "meta")
        except Exception as exc:  # an op without a meta kernel, data-dependent control flow, or a bad input size
            _log.debug("FLOPs on meta failed (%s: %s); measuring on a CPU batch", type(exc).__name__, exc)
            result = None
    if result is None:
        cpu_model = _copy_to(model, "cpu")
        _check_forward(cpu_model, cfg.model, input_size)
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG
            result = _measure(cpu_model, cfg, input_size, batch_size, "cpu")
    if use_cache:
        _CACHE[key] = result
    return result


def _measure(model, cfg: TrainConfig, input_size: tuple[int, int, int], batch_size: int, device: str) -> StepFlops:
    x = torch.rand((batch_size, *input_size), device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)  # class 0 exists for every head
    model.train()

    def forward():
        model(x)

    def input_backward():
        delta = torch.zeros_like(x, requires_grad=True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        torch.autograd.grad(loss, delta)

    def full_backward():
        F.cross_entropy(model(x), y).backward()

    def train_step():
        task(x, y)["loss"].backward()

    def penalty_backward():  # GradAlign's penalty; the clean gradient's values do not change FLOPs
        grad_align_penalty(model, x, y, cfg.eps, torch.ones_like(x))[0].backward()

    fwd = count_flops(forward)
    in_bwd = count_flops(input_backward) - fwd
    full_bwd = count_flops(full_backward) - fwd
    _zero_grad(model)
    double_bwd = count_flops(penalty_backward) - fwd - in_bwd if cfg.method is Method.GRAD_ALIGN else 0
    _zero_grad(model)
    task = create_task(cfg, model)
    step = count_flops(train_step)
    _zero_grad(model)

    k = effective_attack_steps(cfg)
    per = float(batch_size)
    fwd, in_bwd, full_bwd, step, double_bwd = fwd / per, in_bwd / per, full_bwd / per, step / per, double_bwd / per
    attack_step = fwd + in_bwd
    return StepFlops(
        model=str(cfg.model), method=cfg.method.value, attack_steps=k, input_size=input_size,
        forward_flops=fwd, input_backward_flops=in_bwd, full_backward_flops=full_bwd, attack_step_flops=attack_step,
        train_step_flops=step, attack_flops_fraction=(k * attack_step / step) if step else 0.0,
        analytic_train_step_flops=analytic_train_step_flops(cfg.method, k, fwd), measured_on=device,
        batch_size=batch_size, double_backward_flops=double_bwd)


# ---------------------------------------------------------------------- helpers
def _unwrap(model):
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(getattr(model, "_orig_mod"), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _copy_to(model, device: str):
    """A deep copy of ``model`` whose parameters and buffers live on ``device`` (float32).

    The copy never materialises the original's values on the way: deepcopy is told (memo) to
    use new tensors for every parameter and buffer, so copying a GPU model to meta costs nothing.
    A meta source copied to CPU gets placeholder values (FLOPs do not depend on them).
    """
    memo: dict[int, Any] = {}
    for name, p in model.named_parameters(remove_duplicate=True):
        memo[id(p)] = nn.Parameter(_convert(p, device, name), requires_grad=p.requires_grad)
    for name, b in model.named_buffers(remove_duplicate=True):
        if b is not None:
            memo[id(b)] = _convert(b, device, name)
    with torch.no_grad():
        return copy.deepcopy(model, memo)


def _convert(t, device: str, name: str):
    dtype = torch.float32 if t.is_floating_point() else t.dtype
    if device == "meta":
        return torch.empty(t.shape, dtype=dtype, device="meta")
    if t.is_meta:  # placeholder values: BN running variance 1, other buffers 0, weights small
        if not t.is_floating_point() or name.endswith("running_mean"):
            return torch.zeros(t.shape, dtype=dtype)
        if name.endswith("running_var"):
            return torch.ones(t.shape, dtype=dtype)
        return torch.randn(t.shape, dtype=dtype) * 0.05
    return t.detach().to(device=device, dtype=dtype, copy=True)


def _zero_grad(model) -> None:
    for p in model.parameters():
        p.grad = None


def _architecture_key(model) -> str:
    """Hash of the module tree (layer types and shapes) and parameter count."""
    n = sum(p.numel() for p in model.parameters())
    return hashlib.sha1(f"{type(model).__qualname__}|{n}|{model!r}".encode()).hexdigest()


def _default_input_size(model) -> tuple[int, int, int]:
    inner = getattr(model, "model", model)
    cfg = getattr(inner, "pretrained_cfg", None) or getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return tuple(int(s) for s in size) if size else DEFAULT_INPUT_SIZE


def _check_input_size(size) -> tuple[int, int, int]:
    try:
        values = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise UserError(f"invalid input size {size!r}: expected three positive integers C H W, e.g. 3 32 32") from None
    if len(values) != 3 or min(values) < 1:
        raise UserError(f"invalid input size {' '.join(map(str, values))}: expected three positive integers C H W, "
                        "e.g. 3 32 32")
    return values


def _check_forward(model, name: str, input_size: tuple[int, int, int]) -> None:
    """Raise a one-line UserError if ``model`` cannot take images of ``input_size``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_size)))
    except (RuntimeError, AssertionError, ValueError, IndexError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        size = "x".join(map(str, input_size))
        raise UserError(f"model {name} cannot take input size {size} (C x H x W): {reason}") from None
    finally:
        model.train(was_training)
