"""Training augmentation and image-folder transforms.

In-memory datasets (CIFAR, MNIST-like, generated data) are augmented a whole batch at a time on
uint8 tensors (random crop from a zero-padded image + horizontal flip), which costs about a
millisecond per 128 CIFAR images on one core. Image folders use per-image torchvision v2
transforms (RandomResizedCrop + flip for training, resize + center crop for evaluation).
All randomness comes from an explicit seed so that a batch depends only on (seed, epoch, step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .info import DatasetName

# timm's default eval crop: resize the shorter side to size / 0.875, then center-crop `size`.
CROP_PCT = 0.875


@dataclass(frozen=True)
class CropFlip:
    """Random crop of the original size from an image zero-padded by ``padding`` px, optional h-flip."""

    padding: int
    flip: bool


def train_augmentation(name: DatasetName) -> CropFlip | None:
    """The standard training augmentation of a tensor dataset (None for image folders).

    CIFAR: pad 4 + crop + flip (He et al. 2016; every robust-training paper since Madry et al.).
    Fashion-MNIST: pad 2 + crop + flip. MNIST: pad 2 + crop, no flip (mirrored digits are not digits).
    """
    return {
        DatasetName.CIFAR10: CropFlip(4, True),
        DatasetName.CIFAR100: CropFlip(4, True),
        DatasetName.FASHION_MNIST: CropFlip(2, True),
        DatasetName.MNIST: CropFlip(2, False),
    }.get(name)


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Batched random crop + horizontal flip. ``x``: (N, C, H, W) any dtype -> same shape and dtype.

    Each image is zero-padded by ``padding`` px on every side and an HxW window at a uniformly random
    offset in [0, 2*padding]^2 is kept (torchvision ``RandomCrop(size, padding)``); then, if ``flip``,
    it is mirrored left-right with probability 1/2.
    """
    n, c, h, w = x.shape
    if n == 0 or (padding <= 0 and not flip):
        return x.contiguous()
    padding = max(int(padding), 0)
    hp, wp = h + 2 * padding, w + 2 * padding
    oy = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator)
    cols = torch.arange(w).expand(n, 1, w)
    if flip:  # a mirrored crop reads the window's columns right to left
        mirror = (torch.rand(n, generator=generator) < 0.5)[:, None, None]
        cols = torch.where(mirror, w - 1 - cols, cols)
    # One gather over the flattened padded image: ~0.25 ms for 128 CIFAR images on one core.
    index = (oy + torch.arange(h)[:, None]) * wp + ox + cols  # (N, H, W)
    padded = F.pad(x, (padding,) * 4) if padding else x
    out = padded.reshape(n, c, hp * wp).gather(2, index.reshape(n, 1, h * w).expand(n, c, h * w))
    return out.reshape(n, c, h, w)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) in [0, 255] -> float32 in [0, 1]."""
    return x.to(torch.float32).div_(255.0)


def folder_eval_transform(size: int):
    """PIL image -> float32 (3, size, size) in [0, 1]: resize shorter side to size/0.875, center crop."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(round(size / CROP_PCT)), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
    ])


def folder_train_transform(size: int):
    """PIL image or uint8 tensor -> float32 (3, size, size): RandomResizedCrop + horizontal flip."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
    ])
