"""Shared pieces of the training-time attacks: input-only gradients, random starts, projections.

Everything here works on a perturbation ``delta`` of shape (N, C, H, W) in [0,1] pixel units,
kept feasible for both constraints: ``||delta||_p <= eps`` and ``0 <= x + delta <= 1``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

TINY = 1e-12  # guards l2 normalisations against a zero gradient / zero perturbation


@contextlib.contextmanager
def input_grad_only(model: nn.Module) -> Iterator[None]:
    """Switch ``requires_grad`` off on the model's parameters for the duration of an attack.

    ``torch.autograd.grad(loss, delta)`` already skips weight-gradient kernels in eager mode; turning
    the flag off also stops autograd from saving what only weight gradients need (less memory), and
    makes a ``torch.compile``d model trace an input-gradient-only backward (AOTAutograd would otherwise
    compute every gradient its graph can produce). Restores the flags on exit, also on error.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def loss_precision(logits: torch.Tensor) -> torch.Tensor:
    """Logits as the losses take them: float16 / bfloat16 (autocast) upcast to float32; float32 and
    float64 kept, so a float64 model gives a float64 attack (the tests compare it to NumPy in float64)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, in ``x``'s memory format (channels-last stays channels-last)."""
    if generator is None or generator.device == x.device:
        return torch.empty_like(x).normal_(generator=generator)
    out = torch.empty(x.shape, dtype=x.dtype, device=generator.device).normal_(generator=generator)
    return out.to(x.device).contiguous(memory_format=_memory_format(x))


def rand_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) noise shaped like ``x``, in ``x``'s memory format."""
    if generator is None or generator.device == x.device:
        return torch.empty_like(x).uniform_(generator=generator)
    out = torch.empty(x.shape, dtype=x.dtype, device=generator.device).uniform_(generator=generator)
    return out.to(x.device).contiguous(memory_format=_memory_format(x))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example l2 norm, shaped (N, 1, 1, ...) to broadcast against ``t`` (no copy for channels-last)."""
    return torch.linalg.vector_norm(t, ord=2, dim=tuple(range(1, t.dim())), keepdim=True).clamp_min_(TINY)


def uniform_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random point of the eps-ball around 0, shaped like ``x`` (not yet box-clipped).

    l-inf: each coordinate uniform in [-eps, eps]. l2: uniform in the ball (uniform direction from a
    normalised Gaussian, radius ``eps * u**(1/d)``; in image dimensions that is close to the sphere).
    """
    if norm == "linf":
        return rand_like(x, generator).mul_(2 * eps).sub_(eps)
    if norm == "l2":
        direction = randn_like(x, generator)
        direction.div_(_flat_norm(direction))
        d = x[0].numel()
        radius = rand_like(x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)), generator)
        radius = radius.pow_(1.0 / d).mul_(eps)
        return direction.mul_(radius)
    raise ValueError(f"unknown norm {norm!r}; valid: linf, l2")


def ascent_step_(delta: torch.Tensor, grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    """In place: ``delta += step_size * direction(grad)`` (sign for l-inf, unit l2 direction for l2)."""
    if norm == "linf":
        return delta.add_(grad.sign_(), alpha=step_size)
    return delta.add_(grad.div_(_flat_norm(grad)), alpha=step_size)


def feasible_bounds(x: torch.Tensor, eps: float, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds ``lo <= delta <= hi`` computed once per attack.

    Always ``x + delta`` in [0,1]; for l-inf also ``|delta| <= eps``, folded in so that a single clamp
    projects onto the intersection (both are boxes). For l2 the ball is handled by :func:`project_`.
    """
    if norm == "linf":
        return (-x).clamp_(min=-eps), (1 - x).clamp_(max=eps)
    return -x, 1 - x


def project_(delta: torch.Tensor, eps: float, norm: str, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """In place: project onto the feasible set given the bounds of :func:`feasible_bounds`.

    l-inf: one clamp onto the intersection of the eps-box and the image box. l2: scale into the
    eps-ball, then clip to the image box (which only shrinks the norm, so both constraints hold).
    """
    if norm == "l2":
        delta.mul_((eps / _flat_norm(delta)).clamp_(max=1.0))
    return delta.clamp_(lo, hi)


def check_norm(norm) -> str:
    norm = getattr(norm, "value", norm)
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; valid: linf, l2")
    return norm
