"""The TRADES inner maximisation (Zhang et al. 2019).

Maximises ``KL(p(x) || p(x_adv))`` where ``p(x)`` is the (fixed) clean prediction, starting from
``x + 0.001 * N(0, 1)`` as in the reference implementation (github.com/yaodongyu/TRADES). Unlike the
reference, the clean prediction is computed once (or passed in as ``clean_logits``) instead of at
every step, and only the input gradient is computed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (ascent_step_, check_norm, feasible_bounds, input_grad_only, loss_precision, project_,
                      randn_like)

__all__ = ["trades_inner_max", "trades_kl"]


def trades_kl(adv_logits: torch.Tensor, clean_logits: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``KL(softmax(clean) || softmax(adv))`` (the TRADES robust term); reduction ``sum`` or ``batchmean``."""
    return F.kl_div(F.log_softmax(loss_precision(adv_logits), dim=1), F.softmax(loss_precision(clean_logits), dim=1),
                    reduction=reduction)


def trades_inner_max(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    generator: torch.Generator | None = None,
    clean_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adversarial examples for the TRADES robust loss.

    Args:
        model: (N, C, H, W) pixels in [0,1] -> (N, K) logits, in the mode the caller set.
        x: clean images (N, C, H, W) in [0,1].
        eps, step_size: pixel units. steps: >= 1. norm: ``"linf"`` or ``"l2"``.
        generator: RNG for the 0.001 * N(0,1) start.
        clean_logits: (N, K) clean logits to use as the KL target (detached here); computed with one
            no-grad forward when None.
    Returns:
        x_adv (N, C, H, W), detached, in [0,1], within eps of x.
    """
    norm = check_norm(norm)
    x = x.detach()
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = model(x)
    target = F.softmax(loss_precision(clean_logits.detach()), dim=1)
    lo, hi = feasible_bounds(x, eps, norm)
    delta = randn_like(x, generator).mul_(0.001)
    delta.requires_grad_(True)
    with input_grad_only(model), torch.enable_grad():
        for _ in range(steps):
            value = F.kl_div(F.log_softmax(loss_precision(model(x + delta)), dim=1), target, reduction="sum")
            (grad,) = torch.autograd.grad(value, delta)
            with torch.no_grad():
                project_(ascent_step_(delta, grad, step_size, norm), eps, norm, lo, hi)
    return (x + delta.detach()).clamp_(0, 1)
