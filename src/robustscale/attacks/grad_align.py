"""GradAlign (Andriushchenko & Flammarion, "Understanding and improving fast adversarial training", NeurIPS 2020).

The training loss is ``CE(f(x_fgsm), y) + lambda * (1 - cos(grad_x l(x), grad_x l(x + eta)))`` with
``eta ~ U[-eps, eps]``. Following the reference (github.com/tml-epfl/understanding-fast-adv-training,
``train.py``, whose CIFAR-10 command is ``--attack=fgsm --attack_init=zero --grad_align_cos_lambda=0.2``):

- the attack is FGSM from the clean image (zero init) with step ``fgsm_alpha * eps`` clamped to the
  eps-ball (their default alpha 1.25 from zero init lands on ``eps * sign(grad)``: a step of eps), and its
  gradient at ``x`` is the first gradient of the cosine, used detached (``grad = grad.detach()`` before the
  regulariser; their README: backpropagating through one of the two gradients is enough);
- the second gradient is taken at ``x + eta`` (``utils.get_uniform_delta``: not clipped to the image box)
  with ``create_graph=True``, so the penalty's gradient w.r.t. the weights is a double backward;
- the cosine is per example over all pixels, averaged over the examples whose two gradients are both
  non-zero (``grads_nnz_idx``); the penalty is ``1 - mean cos``.

:func:`~.fgsm.fgsm` (``return_grad=True``) gives the attack and the first gradient with an input-only
backward; :func:`grad_align_penalty` is the part that needs parameter gradients, so it runs with the
parameters' ``requires_grad`` as the caller has them (the task computes it as part of the training loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import TINY, loss_precision, uniform_start

__all__ = ["gradient_cosine", "grad_align_penalty"]


def gradient_cosine(grad_a: torch.Tensor, grad_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example cosine of two input gradients and which examples count.

    Args:
        grad_a, grad_b: (N, ...) gradients.
    Returns:
        ``(cos, valid)``: cos (N,) over all non-batch dimensions (0 where a gradient is zero) and valid
        (N,) bool, both gradients non-zero. No data-dependent shapes, so it also runs on the meta device.
    """
    a, b = loss_precision(grad_a.flatten(1)), loss_precision(grad_b.flatten(1))
    norm_a, norm_b = torch.linalg.vector_norm(a, dim=1), torch.linalg.vector_norm(b, dim=1)
    valid = (norm_a > 0) & (norm_b > 0)
    cos = (a * b).sum(1) / (norm_a.clamp_min(TINY) * norm_b.clamp_min(TINY))
    return cos, valid


def grad_align_penalty(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    grad_clean: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradAlign's ``1 - mean cos(grad_clean, grad_x l(x + eta))``, differentiable w.r.t. the weights.

    Args:
        model: (N, C, H, W) pixels -> (N, K) logits, in the mode the caller set, parameters requiring
            grad; eager (a ``torch.compile``d graph cannot be differentiated twice).
        x: (N, C, H, W) clean images in [0,1]; y: (N,) labels (or (N, K) soft targets).
        eps: l-inf radius of the noise, pixel units.
        grad_clean: (N, C, H, W) input gradient of the loss at ``x`` (e.g. from FGSM); used detached.
        generator: RNG for ``eta``.
    Returns:
        ``(penalty, cos)``: penalty a scalar with a graph to the weights (0 when no example has two non-zero
        gradients), cos (N,) the detached per-example cosines.
    """
    x = x.detach()
    eta = uniform_start(x, eps, "linf", generator).requires_grad_(True)  # not box-clipped, as the reference
    with torch.enable_grad():
        # Summed loss: the cosine does not depend on the gradient's scale, the zero test neither.
        value = F.cross_entropy(loss_precision(model(x + eta)), y, reduction="sum")
        (grad_noisy,) = torch.autograd.grad(value, eta, create_graph=True)
        cos, valid = gradient_cosine(grad_clean.detach(), grad_noisy)
        weights = valid.to(cos.dtype)
        penalty = ((1.0 - cos) * weights).sum() / weights.sum().clamp_min(1.0)
    return penalty, cos.detach()
