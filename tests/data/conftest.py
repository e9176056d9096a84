"""Fixtures for the data tests: an isolated search path and tiny files in the real formats."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def isolated_search(monkeypatch, tmp_path):
    """No $ROBUSTSCALE_DATA, an empty download cache, no system folders (tests opt back in)."""
    from robustscale.data import locations

    monkeypatch.delenv("ROBUSTSCALE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(locations, "SYSTEM_DIRS", {})


def _rows(images_hwc: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) rows: 1024 red, then green, then blue values (the CIFAR layout)."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1))


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(root: Path, n_train_per_batch: int = 4, n_test: int = 6, seed: int = 0):
    """torchvision's ``cifar-10-batches-py/`` with 5 train batches, a test batch and batches.meta.

    Returns (train_images HWC, train_labels, test_images HWC, test_labels).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x = rng.integers(0, 256, (5 * n_train_per_batch, 32, 32, 3), dtype=np.uint8)
    train_y = rng.integers(0, 10, 5 * n_train_per_batch)
    test_x = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, n_test)
    for b in range(5):
        sl = slice(b * n_train_per_batch, (b + 1) * n_train_per_batch)
        _dump(folder / f"data_batch_{b + 1}", {
            "batch_label": f"training batch {b + 1} of 5", "labels": train_y[sl].tolist(),
            "data": _rows(train_x[sl]), "filenames": [f"img_{i}.png" for i in range(sl.start, sl.stop)]})
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y.tolist(),
                                  "data": _rows(test_x), "filenames": [f"t_{i}.png" for i in range(n_test)]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": n_train_per_batch, "label_names": CIFAR10_CLASSES,
                                    "num_vis": 3072})
    return train_x, train_y, test_x, test_y


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 5, seed: int = 1):
    """torchvision's ``cifar-100-python/`` (train, test, meta with fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 100, n)
        _dump(folder / split, {"filenames": [f"{split}_{i}.png" for i in range(n)], "batch_label": f"{split} batch",
                               "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": _rows(x)})
        out += [x, y]
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return tuple(out)


@pytest.fixture
def cifar10_dir(tmp_path):
    data = write_cifar10(tmp_path / "c10")
    return tmp_path / "c10", data


@pytest.fixture
def mnist_dir(tmp_path):
    """64 train / 32 test 28x28 images in IDX .gz (Fashion-MNIST file names)."""
    from robustscale.testing import write_mnist_like

    return write_mnist_like(tmp_path / "mn", n_train=64, n_test=32)
