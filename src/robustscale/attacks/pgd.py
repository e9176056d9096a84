"""Projected gradient descent (Madry et al. 2018) in l-inf and l2, written for training-time speed.

Each step costs one forward and one input-gradient backward: parameters have ``requires_grad``
switched off for the attack and the gradient is taken with ``torch.autograd.grad`` w.r.t. the
perturbation only, so no weight-gradient work is done and parameters' ``.grad`` stay untouched.
The perturbation is updated in place; there is no clean forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (ascent_step_, check_norm, feasible_bounds, input_grad_only, loss_precision, project_,
                      uniform_start)

__all__ = ["pgd", "attack_loss"]


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per-example loss the attack ascends, shape (N,).

    ``ce``: cross-entropy (``y`` class indices, or soft targets (N, K) e.g. from CutMix).
    ``cw``: Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (class indices only).
    """
    logits = loss_precision(logits)
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "cw":
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return other - true
    raise ValueError(f"unknown attack loss {loss!r}; valid: ce, cw")


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    loss: str = "ce",
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted PGD maximising ``loss`` in the ``norm`` ball of radius ``eps`` around ``x``.

    Args:
        model: maps (N, C, H, W) pixels in [0,1] to (N, K) logits; used in whatever mode the caller set.
        x: clean images (N, C, H, W) in [0,1]. y: labels (N,) int64 (or soft targets (N, K) for ``ce``).
        eps, step_size: pixel units ([0,1] scale), e.g. 8/255 and 2/255.
        steps: gradient steps (>= 1). norm: ``"linf"`` (signed-gradient steps) or ``"l2"`` (normalised).
        random_start: start from a uniform point of the eps-ball (clipped to the image box), else from x.
        loss: ``"ce"`` or ``"cw"`` (see :func:`attack_loss`).
        restarts: > 1 runs independent random starts and keeps, per example, the one with the highest loss
            (one extra forward per restart to score it).
        generator: RNG for the random start (reproducible attacks without touching the global RNG).
    Returns:
        x_adv (N, C, H, W), detached, in [0,1], with ``||x_adv - x||_norm <= eps``.
    """
    norm = check_norm(norm)
    x = x.detach()
    if restarts > 1:
        best, best_loss = None, None
        for _ in range(restarts):
            x_adv = pgd(model, x, y, eps, step_size, steps, norm, random_start, loss, 1, generator)
            with torch.no_grad():
                cur = attack_loss(model(x_adv), y, loss)
            if best is None:
                best, best_loss = x_adv, cur
            else:
                better = cur > best_loss
                best[better] = x_adv[better]
                best_loss = torch.where(better, cur, best_loss)
        return best

    lo, hi = feasible_bounds(x, eps, norm)
    if random_start:
        delta = uniform_start(x, eps, norm, generator).clamp_(lo, hi)
    else:
        delta = torch.zeros_like(x)
    delta.requires_grad_(True)
    with input_grad_only(model), torch.enable_grad():
        for _ in range(steps):
            # Sum (not mean): the step direction is per-example and must not depend on the batch size.
            logits = model(x + delta)
            value = F.cross_entropy(loss_precision(logits), y, reduction="sum") if loss == "ce" else \
                attack_loss(logits, y, loss).sum()
            (grad,) = torch.autograd.grad(value, delta)
            with torch.no_grad():
                project_(ascent_step_(delta, grad, step_size, norm), eps, norm, lo, hi)
    return (x + delta.detach()).clamp_(0, 1)
