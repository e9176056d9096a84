"""FGSM with a random start ("fast is better than free", Wong et al. 2020).

One l-inf step of size ``step_size`` (Wong et al.: 1.25 eps) from a uniform random point of the
eps-ball, then projection and [0,1] clipping. Input gradient only, like :func:`~.pgd.pgd`.
"""
from __future__ import annotations

import torch
from torch import nn

from .pgd import pgd

__all__ = ["fgsm_rs"]


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
