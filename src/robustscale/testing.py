"""Small learnable datasets written in real on-disk formats, for tests and examples.

The images are class-dependent patterns plus noise, so a tiny network learns them in a few
steps, and an adversary with a small eps cannot flip them all: good enough to check that
training raises (robust) accuracy, without shipping or downloading any data.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def learnable_images(n: int, num_classes: int = 10, size: int = 28, channels: int = 1, seed: int = 0,
                     noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (n, size, size, channels), labels uint8 (n,))``: class k is a bright bar.

    Class k lights a horizontal or vertical band whose position depends on k, on a noisy background.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n).astype(np.uint8)
    images = rng.normal(0.3, noise, size=(n, size, size, channels))
    band = max(size // (num_classes // 2 + 1), 2)
    for i, k in enumerate(labels):
        pos = (k // 2) * band + band // 2
        if k % 2 == 0:
            images[i, pos:pos + band, :, :] += 0.5
        else:
            images[i, :, pos:pos + band, :] += 0.5
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels


def write_idx(path: str | Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write a uint8 array in IDX format (magic 0x0000080{ndim}, big-endian dims), optionally gzipped."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_mnist_like(root: str | Path, n_train: int = 512, n_test: int = 256, num_classes: int = 10,
                     size: int = 28, seed: int = 0, compress: bool = True) -> Path:
    """Write ``train-images-idx3-ubyte[.gz]`` etc. (the Fashion-MNIST/MNIST file names) to ``root``."""
    root = Path(root)
    suffix = ".gz" if compress else ""
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = learnable_images(n, num_classes, size, 1, s)
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images[..., 0], compress)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
    return root
