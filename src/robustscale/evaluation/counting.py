"""The model as the evaluation sees it: counted passes, optional autocast, gradient-masking check.

Counting passes at the model boundary is exact for any attack, AutoAttack included (APGD takes
one input gradient per iteration, FAB-T several, Square none): the evaluation's FLOPs are then
``forward_images * forward_flops + backward_images * input_backward_flops`` with per-image costs
measured once by :mod:`robustscale.compute`.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Amp


class AutocastModel(nn.Module):
    """Run ``model`` under ``torch.autocast`` (bf16/fp16) and return float32 logits."""

    def __init__(self, model: nn.Module, amp: Amp):
        super().__init__()
        self.model = model
        self.dtype = {Amp.BF16: torch.bfloat16, Amp.FP16: torch.float16}[amp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.model(x)
        return out.float()


class PassCounter(nn.Module):
    """Wrap ``model`` and count the images it forwards and back-propagates.

    ``forward_images`` grows by the batch size on every call; ``backward_images`` grows by the batch
    size every time a gradient flows back through the output (a hook on the logits, so FAB's
    per-class ``backward(retain_graph=True)`` counts once per backward, as it costs).

    A model whose logits are detached from its input (non-differentiable preprocessing, argmax
    outputs) would make gradient attacks crash on ``autograd.grad``; for such a model the input
    gradient is zero by definition, so we attach the logits to the input with a zero weight: the
    attacks then run, find a zero gradient, and the masking check reports it.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.forward_images = 0
        self.backward_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = x.shape[0]
        self.forward_images += n
        if torch.is_grad_enabled() and x.requires_grad:
            if not out.requires_grad:
                # x * 0 first: its backward makes a dense zero gradient (attacks update it in place).
                out = out + x.mul(0.0).flatten(1).sum(1, keepdim=True).to(out.dtype)
            out.register_hook(partial(self._count_backward, n))
        return out

    def _count_backward(self, n: int, grad: torch.Tensor) -> None:
        self.backward_images += n


def gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Input-gradient norms of the cross-entropy on one batch: the cheapest gradient-masking symptom.

    Args:
        model: [0,1]-pixel classifier in eval mode. x: (N, C, H, W). y: (N,) int64.
    Returns:
        ``{"examples": N, "zero_gradient": k, "nonfinite_gradient": m, "median_grad_norm": float}``
        where k counts examples whose input gradient is exactly (to 1e-12) zero.
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    norms = grad.flatten(1).float().norm(dim=1)
    finite = torch.isfinite(norms)
    median = norms[finite].median().item() if finite.any() else math.nan
    return {"examples": int(x.shape[0]), "zero_gradient": int((finite & (norms <= 1e-12)).sum()),
            "nonfinite_gradient": int((~finite).sum()), "median_grad_norm": median}


def masking_warning(check: dict) -> str | None:
    """A one-line warning when most of the batch has zero or non-finite input gradients."""
    n = check["examples"]
    bad = check["zero_gradient"] + check["nonfinite_gradient"]
    if n == 0 or bad < 0.5 * n:
        return None
    what = []
    if check["zero_gradient"]:
        what.append(f"zero on {check['zero_gradient']}/{n}")
    if check["nonfinite_gradient"]:
        what.append(f"non-finite on {check['nonfinite_gradient']}/{n}")
    return (f"possible gradient masking: the input gradient of the loss is {' and '.join(what)} examples; "
            "gradient attacks (PGD, APGD, FAB) cannot make progress, so robust accuracy is an upper bound. "
            "Use aa-standard (its black-box Square attack does not need gradients) or an adaptive attack.")
