"""Generated (synthetic, e.g. diffusion-model) training images from an ``.npz`` file.

Format (as in Wang et al. 2023, "Better diffusion models further improve adversarial training"):
``image`` uint8 (N, H, W, C) and ``label`` integer (N,). Grayscale files may omit C.
The images must match the real data's (C, H, W) and the labels its classes.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError


class GeneratedImages:
    """Validated generated data: ``images`` uint8 (N, C, H, W) (a view over the NHWC file data),
    ``targets`` int64 (N,), ``path``."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, path: Path):
        self.images, self.targets, self.path = images, targets, path

    def __len__(self) -> int:
        return len(self.targets)


def load_generated(path: str | os.PathLike, image_shape: tuple[int, int, int], num_classes: int) -> GeneratedImages:
    """Read and check ``path`` against the real data's ``image_shape`` (C, H, W) and ``num_classes``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"generated data file not found: {path}; expected an .npz with arrays "
                        f"image (N,H,W,C uint8) and label (N,)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            missing = [k for k in ("image", "label") if k not in keys]
            if missing:
                raise UserError(f"generated data {path} lacks array {', '.join(repr(m) for m in missing)} "
                                f"(has: {', '.join(keys) or 'nothing'}); expected image (N,H,W,C uint8) and label (N,)")
            image, label = npz["image"], npz["label"]
    except UserError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UserError(f"cannot read generated data {path}: not a valid .npz "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    c, h, w = image_shape
    if image.dtype != np.uint8:
        raise UserError(f"generated images in {path} are {image.dtype}; expected uint8 (0-255) like the real data")
    if image.ndim == 3 and c == 1:
        image = image[..., None]
    if image.ndim != 4 or image.shape[1:] != (h, w, c):
        raise UserError(f"generated images in {path} have shape {image.shape}; expected (N, {h}, {w}, {c}) "
                        f"to match the real data")
    if label.ndim != 1 or len(label) != len(image):
        raise UserError(f"generated data {path}: label has shape {label.shape} for {len(image)} images; "
                        f"expected ({len(image)},)")
    if not np.issubdtype(label.dtype, np.integer):
        raise UserError(f"generated labels in {path} are {label.dtype}; expected integers")
    if len(image) == 0:
        raise UserError(f"generated data {path} holds no images")
    if label.min() < 0 or label.max() >= num_classes:
        raise UserError(f"generated labels in {path} span {int(label.min())}..{int(label.max())}; "
                        f"the dataset has classes 0..{num_classes - 1}")
    # Keep the file's NHWC memory and permute lazily: a batch gather copies only the batch.
    images = torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2)
    return GeneratedImages(images, torch.from_numpy(label.astype(np.int64)), path)
