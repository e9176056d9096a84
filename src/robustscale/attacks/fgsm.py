"""FGSM (Goodfellow et al. 2015) and FGSM with a random start ("fast is better than free", Wong et al. 2020).

:func:`fgsm`: one step of size ``step_size`` (default eps) from the clean image, then projection and
[0,1] clipping; it is the per-epoch FGSM check of catastrophic overfitting and GradAlign's attack.
:func:`fgsm_rs`: one l-inf step of size ``step_size`` (Wong et al.: 1.25 eps) from a uniform random point
of the eps-ball, then projection and [0,1] clipping. Input gradient only, like :func:`~.pgd.pgd`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import ascent_step_, check_norm, feasible_bounds, input_grad_only, loss_precision, project_
from .pgd import pgd

__all__ = ["fgsm", "fgsm_rs"]


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float | None = None,
    norm: str = "linf",
    return_grad: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """FGSM adversarial examples from the clean image (no random start).

    Args:
        model: (N, C, H, W) pixels in [0,1] -> (N, K) logits, in the mode the caller set.
        x: (N, C, H, W) in [0,1]; y: (N,) labels (or (N, K) soft targets).
        eps: radius, pixel units. step_size: pixel units, default eps (larger steps are projected back).
        norm: ``"linf"`` (signed gradient) or ``"l2"`` (normalised gradient).
        return_grad: also return the input gradient of the summed cross-entropy at ``x``.
    Returns:
        x_adv (N, C, H, W) in [0,1] with ``||x_adv - x||_norm <= eps``; with ``return_grad``,
        ``(x_adv, grad)``, ``grad`` detached and shaped like ``x``.
    """
    norm = check_norm(norm)
    x = x.detach()
    step_size = eps if step_size is None else step_size
    delta = torch.zeros_like(x, requires_grad=True)
    with input_grad_only(model), torch.enable_grad():
        value = F.cross_entropy(loss_precision(model(x + delta)), y, reduction="sum")
        (grad,) = torch.autograd.grad(value, delta)
    lo, hi = feasible_bounds(x, eps, norm)
    with torch.no_grad():
        delta = project_(ascent_step_(delta.detach(), grad.clone() if return_grad else grad, step_size, norm),
                         eps, norm, lo, hi)
    x_adv = (x + delta).clamp_(0, 1)
    return (x_adv, grad) if return_grad else x_adv


def fgsm_rs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FGSM-RS adversarial examples.

    Args:
        model: (N, C, H, W) pixels in [0,1] -> (N, K) logits, in the mode the caller set.
        x: (N, C, H, W) in [0,1]; y: (N,) labels. eps, step_size: pixel units (step 1.25 * eps in the paper).
        generator: RNG for the random start.
    Returns:
        x_adv (N, C, H, W) in [0,1], ``|x_adv - x| <= eps`` elementwise.
    """
    # Exactly a one-step l-inf PGD from a uniform random start: same projection, same input-only gradient.
    return pgd(model, x, y, eps, step_size, steps=1, norm="linf", random_start=True, generator=generator)
