"""Models: CIFAR nets registered in timm, and the [0,1]-pixel normalization wrapper.

Importing ``robustscale`` registers ``wide_resnet{16_1,...,106_16}[_dm]``, ``resnet18_32``,
``resnet50_32`` and ``preact_resnet18`` so that ``timm.create_model(name)`` works.
"""
from __future__ import annotations

import difflib
import re
from typing import Sequence

import timm
from torch import nn

from ..errors import UserError
from . import resnet_cifar, wide_resnet  # noqa: F401  (registers the models in timm)
from .normalize import NormalizedModel
from .wide_resnet import WideResNet, wide_resnet

__all__ = ["NormalizedModel", "WideResNet", "wide_resnet", "create_model", "our_models", "check_model_name",
           "count_parameters"]

_OUR_MODULES = ("wide_resnet", "resnet_cifar")  # timm keys modules by their last name part


def our_models() -> list[str]:
    """Names of the models this package registers, in natural order (``wide_resnet16_1`` before ``wide_resnet106_16``)."""
    return sorted(timm.list_models(module=list(_OUR_MODULES)), key=_natural_key)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def check_model_name(name: str) -> str:
    """Raise UserError unless ``name`` is a timm model (ours included)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown model {name!r}; ours: {', '.join(our_models())}; or any name from "
                        f"`timm.list_models()`{hint}")
    return name


def create_model(
    name: str,
    num_classes: int = 10,
    in_chans: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> NormalizedModel:
    """``timm.create_model`` wrapped with normalization inside, taking [0,1] pixels.

    mean/std: the pixel statistics of the data the model sees (the caller's: e.g.
    ``robustscale.data.dataset_normalization(dataset)``); default the model's pretrained_cfg.
    """
    check_model_name(name)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if mean is None or std is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", (0.5,) * in_chans), cfg.get("std", (0.5,) * in_chans)
    mean, std = tuple(mean), tuple(std)
    if len(mean) != in_chans:  # e.g. an RGB default on a grayscale model
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return NormalizedModel(model, mean, std)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
