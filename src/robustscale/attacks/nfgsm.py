"""N-FGSM (de Jorge et al., "Make some noise", NeurIPS 2022): a noisy single step without projection.

The reference (github.com/pdejorge/N-FGSM, ``train.py``): ``eta ~ U[-k eps, k eps]`` per pixel (``--unif``,
default 2), clamped so that ``x + eta`` stays in the image box; the gradient of the cross-entropy at
``x + eta``; ``delta = eta + alpha * sign(grad)`` (``--alpha``, default eps) clamped to the image box
only: ``--clip`` defaults to -1, no projection onto the eps-ball, so ``|delta|`` reaches ``(k + 1) eps``.
Input gradient only, like :func:`~.pgd.pgd`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import input_grad_only, loss_precision, rand_like

__all__ = ["n_fgsm"]


def n_fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    k: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """N-FGSM adversarial examples (l-inf).

    Args:
        model: (N, C, H, W) pixels in [0,1] -> (N, K) logits, in the mode the caller set.
        x: (N, C, H, W) in [0,1]; y: (N,) labels (or (N, K) soft targets).
        eps: radius the noise is scaled by, pixel units. step_size: alpha, pixel units (the paper: eps).
        k: noise magnitude in units of eps, ``eta ~ U[-k eps, k eps]`` (0: no noise).
        generator: RNG for the noise.
    Returns:
        x_adv (N, C, H, W), detached, in [0,1]; ``|x_adv - x| <= (k + 1) eps``, not projected to eps.
    """
    x = x.detach()
    delta = rand_like(x, generator).mul_(2 * k * eps).sub_(k * eps)
    delta = torch.minimum(torch.maximum(delta, -x), 1 - x)  # x + eta in the image box, as the reference
    delta.requires_grad_(True)
    with input_grad_only(model), torch.enable_grad():
        value = F.cross_entropy(loss_precision(model(x + delta)), y, reduction="sum")
        (grad,) = torch.autograd.grad(value, delta)
    with torch.no_grad():
        return (x + delta.detach().add_(grad.sign_(), alpha=step_size)).clamp_(0, 1)
