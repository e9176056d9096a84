"""Normalization inside the model, so that attacks and users work on [0,1] pixels."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class NormalizedModel(nn.Module):
    """Wrap ``model`` so it takes pixels in [0,1]: ``model((x - mean) / std)``.

    Args:
        model: any classifier taking normalized (N, C, H, W) input.
        mean, std: per-channel statistics, length C.
    Input: (N, C, H, W) float in [0, 1]. Output: (N, num_classes) logits.
    The inner model stays reachable as ``.model`` and its state dict keys are timm's
    (``model.`` prefix in the wrapper's own state dict; mean/std are non-persistent buffers).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    @property
    def num_classes(self) -> int:
        return getattr(self.model, "num_classes", None)
