"""Readers for the on-disk formats: IDX (MNIST / Fashion-MNIST) and CIFAR pickle batches.

Both return ``(images uint8 (N, C, H, W), labels int64 (N,), classes)`` as numpy arrays and raise
UserError naming the file on anything malformed (so a corrupt download never shows a traceback).
"""
from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .info import DatasetName

IDX_LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension
IDX_IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one IDX file (raw or .gz) and check its magic number and size; returns a uint8 array.

    ``magic`` is 2049 for label files (N,) and 2051 for image files (N, H, W).
    """
    path = Path(path)
    data = _read_bytes(path)
    what = {IDX_LABELS_MAGIC: "labels", IDX_IMAGES_MAGIC: "images"}[magic]
    if len(data) < 4:
        raise UserError(f"corrupt IDX file {path}: {len(data)} bytes, too short for a header")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise UserError(f"corrupt IDX file {path}: magic number {found}, expected {magic} ({what} file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"corrupt IDX file {path}: truncated header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise UserError(f"corrupt IDX file {path}: header says {'x'.join(map(str, dims))} = {expected} bytes "
                        f"of {what}, the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_split(image_path: Path, label_path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 1, H, W), labels int64 (N,))`` from an IDX image file and its label file."""
    images = read_idx(image_path, IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise UserError(f"image/label count mismatch: {image_path} has {len(images)} images, "
                        f"{label_path} has {len(labels)} labels")
    _check_labels(labels, num_classes, label_path)
    return images[:, None], labels.astype(np.int64)


def _check_labels(labels: np.ndarray, num_classes: int, path) -> None:
    if len(labels) and int(labels.max()) >= num_classes:
        raise UserError(f"corrupt labels in {path}: label {int(labels.max())} but the dataset has "
                        f"{num_classes} classes (0..{num_classes - 1})")


def _unpickle(path: Path):
    try:
        with open(path, "rb") as fh:
            # latin1: the official batches are Python 2 pickles (same as torchvision).
            return pickle.load(fh, encoding="latin1")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... on a damaged file
        raise UserError(f"corrupt CIFAR file {path}: not a readable pickle "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None


CIFAR_FILES = {
    DatasetName.CIFAR10: ({"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                          "batches.meta", "label_names", "labels", 10),
    DatasetName.CIFAR100: ({"train": ["train"], "test": ["test"]}, "meta", "fine_label_names", "fine_labels", 100),
}


def read_cifar_split(folder: Path, name: DatasetName, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,), class names)`` from torchvision's CIFAR folder.

    Each batch is a pickled dict with ``data`` (N, 3072) uint8 rows in channel-major order (1024 red,
    1024 green, 1024 blue values, each 32x32 row-major) and ``labels`` (CIFAR-10) or ``fine_labels``
    (CIFAR-100); the meta file holds the class names.
    """
    files, meta_file, meta_key, label_key, num_classes = CIFAR_FILES[name]
    meta = _unpickle(folder / meta_file)
    if not isinstance(meta, dict) or meta_key not in meta:
        raise UserError(f"corrupt CIFAR meta file {folder / meta_file}: no {meta_key!r} entry")
    classes = tuple(str(c) for c in meta[meta_key])
    if len(classes) != num_classes:
        raise UserError(f"corrupt CIFAR meta file {folder / meta_file}: {len(classes)} class names, "
                        f"expected {num_classes}")
    images, labels = [], []
    for fname in files[split]:
        path = folder / fname
        entry = _unpickle(path)
        if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
            keys = ", ".join(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
            raise UserError(f"corrupt CIFAR batch {path}: expected 'data' and {label_key!r} entries, found {keys}")
        data = np.asarray(entry["data"])
        lab = np.asarray(entry[label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UserError(f"corrupt CIFAR batch {path}: 'data' is {data.dtype} {data.shape}, "
                            f"expected uint8 (N, 3072)")
        if lab.ndim != 1 or len(lab) != len(data):
            raise UserError(f"image/label count mismatch in {path}: {len(data)} images, {lab.size} labels")
        if lab.size and (not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0):
            raise UserError(f"corrupt CIFAR batch {path}: labels must be integers >= 0")
        _check_labels(lab, num_classes, path)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels), classes
