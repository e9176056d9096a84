"""Datasets: ``load_dataset`` / ``load_eval_tensors`` over the files found by ``locations.find_data_root``.

CIFAR and MNIST-like data are kept in memory as uint8 tensors (CIFAR-10 train is 150 MB) and
converted to float only when a batch is formed; image folders are read lazily from disk.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError, one_of
from .formats import FASHION_MNIST_CLASSES, MNIST_CLASSES, read_cifar_split, read_idx_split
from .info import DatasetName, dataset_info
from .locations import LAYOUTS, find_data_root, resolve_file
from .transforms import folder_eval_transform

SPLITS = ("train", "test")


class TensorImageDataset(Dataset):
    """In-memory images. ``images``: uint8 (N, C, H, W); ``targets``: int64 (N,).

    ``dataset[i]`` -> ``(float32 (C, H, W) in [0, 1], int label)``; no augmentation.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                 name: DatasetName, split: str, root: Path | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets = images, targets.to(torch.int64)
        self.classes, self.name, self.split, self.root = list(classes), name, split, root

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index].to(torch.float32).div_(255.0), int(self.targets[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, indices: torch.Tensor) -> "TensorImageDataset":
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return TensorImageDataset(self.images[indices], self.targets[indices], self.classes, self.name,
                                  self.split, self.root)

    def __repr__(self) -> str:
        return (f"TensorImageDataset({self.name.value}, split={self.split}, n={len(self)}, "
                f"shape={self.image_shape}, root={self.root})")


class FolderDataset(Dataset):
    """ImageNet-style folder split read lazily: ``samples`` is a list of ``(path, class index)``.

    ``dataset[i]`` -> ``(float32 (3, size, size) in [0, 1], int label)`` after resizing the shorter
    side to size/0.875 and center-cropping (no augmentation).
    """

    def __init__(self, samples: list[tuple[str, int]], classes: Sequence[str], split: str, root: Path,
                 input_size: int):
        self.samples, self.classes, self.split, self.root = list(samples), list(classes), split, root
        self.name, self.input_size = DatasetName.IMAGEFOLDER, int(input_size)
        self.targets = torch.tensor([t for _, t in self.samples], dtype=torch.int64)
        self.transform = folder_eval_transform(self.input_size)

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int):
        """The RGB PIL image of sample ``index``; unreadable files raise UserError naming the file."""
        from PIL import Image

        path = self.samples[index][0]
        try:
            with open(path, "rb") as fh:
                return Image.open(fh).convert("RGB")
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
            raise UserError(f"cannot read image {path}: {' '.join(str(exc).split())}") from None

    def __getitem__(self, index: int):
        return self.transform(self.load_image(index)), self.samples[index][1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.input_size, self.input_size)

    def subset(self, indices) -> "FolderDataset":
        return FolderDataset([self.samples[int(i)] for i in indices], self.classes, self.split, self.root,
                             self.input_size)

    def __repr__(self) -> str:
        return f"FolderDataset({self.root}, split={self.split}, n={len(self)}, classes={len(self.classes)})"


def check_split(split: str) -> str:
    return one_of(split, SPLITS, "split")


def load_dataset(name: str | DatasetName, split: str, data_dir: str | os.PathLike | None = None,
                 download: bool = False, *, input_size: int | None = None) -> Dataset:
    """The ``split`` ("train" or "test") of dataset ``name``, yielding ``(float32 CxHxW in [0,1], int)``.

    Files are found by :func:`robustscale.data.find_data_root` (``data_dir``, ``$ROBUSTSCALE_DATA``,
    system folders, the cache, then a torchvision download if ``download``). ``input_size`` only
    applies to ``imagefolder`` (default 224). CIFAR/MNIST-like splits return a
    :class:`TensorImageDataset` (uint8 tensors in memory), image folders a :class:`FolderDataset`.
    """
    info = dataset_info(name)
    check_split(split)
    root = find_data_root(info.name, data_dir, download)
    if info.name is DatasetName.IMAGEFOLDER:
        size = int(input_size or info.input_size[-1])
        if size < 1:
            raise UserError(f"invalid input_size {input_size!r}: must be >= 1")
        samples, classes = _folder_split(root, split)
        return FolderDataset(samples, classes, split, root, size)
    images, targets, classes = _read_tensor_split(info.name, str(root), split, _stamp(info.name, root))
    return TensorImageDataset(images, targets, classes, info.name, split, root)


def _stamp(name: DatasetName, root: Path) -> tuple:
    """(file, mtime, size) of every data file: the cache key, so a rewritten file is re-read."""
    out = []
    for entry in LAYOUTS[name].files:
        path = resolve_file(root, entry)
        st = path.stat()
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _read_tensor_split(name: DatasetName, root: str, split: str, stamp: tuple):
    """Decode one split once per process (the train loader and the eval tensors share it)."""
    folder = Path(root)
    if name in (DatasetName.CIFAR10, DatasetName.CIFAR100):
        images, labels, classes = read_cifar_split(folder, name, split)
    else:
        prefix = "train" if split == "train" else "t10k"
        images, labels = read_idx_split(resolve_file(folder, f"{prefix}-images-idx3-ubyte|{prefix}-images-idx3-ubyte.gz"),
                                        resolve_file(folder, f"{prefix}-labels-idx1-ubyte|{prefix}-labels-idx1-ubyte.gz"),
                                        dataset_info(name).num_classes)
        classes = FASHION_MNIST_CLASSES if name is DatasetName.FASHION_MNIST else MNIST_CLASSES
    # np.array copies: frombuffer arrays are read-only and torch wants writable memory.
    return torch.from_numpy(np.array(images, dtype=np.uint8)), torch.from_numpy(labels), tuple(classes)


def _folder_split(root: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples and classes of ``root/train`` or ``root/val`` (``root/test`` also accepted for "test").

    Classes come from ``train/`` when it exists, so train and test share one class index. The test
    split is ordered round-robin over classes (first image of every class, then the second, ...)
    so that "the first n test images" is a class-balanced evaluation subset.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    names = ["train"] if split == "train" else ["val", "test"]
    folder = next((root / n for n in names if (root / n).is_dir()), None)
    if folder is None:
        raise UserError(f"imagefolder {root} has no {' or '.join(n + '/' for n in names)} folder for the "
                        f"{split} split; expected {root}/{names[0]}/<class>/<image>")
    class_root = root / "train" if (root / "train").is_dir() else folder
    try:
        classes, class_to_idx = find_classes(str(class_root))
    except FileNotFoundError:
        raise UserError(f"imagefolder {class_root} has no class folders; expected {class_root}/<class>/<image>") \
            from None
    extra = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in class_to_idx)
    if extra:
        raise UserError(f"imagefolder {folder} has classes not in {class_root}: {', '.join(extra[:10])}")
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise UserError(f"imagefolder {folder} has no images ({', '.join(IMG_EXTENSIONS)}) in its class folders")
    if split == "test":
        rank = {}
        keyed = []
        for path, target in samples:  # make_dataset yields class by class, files sorted
            k = rank.get(target, 0)
            rank[target] = k + 1
            keyed.append((k, target, path))
        samples = [(p, t) for _, t, p in sorted(keyed)]
    return samples, classes


def subset_indices(n: int, k: int, seed: int) -> torch.Tensor:
    """``k`` distinct indices of ``range(n)`` chosen at random with ``seed``, sorted (int64)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:k].sort().values


def load_eval_tensors(name: str | DatasetName, n: int | None = None, data_dir: str | os.PathLike | None = None,
                      download: bool = False, *, input_size: int | None = None):
    """The FIRST ``n`` test images as ``(x float32 (n, C, H, W) in [0, 1], y int64 (n,))``.

    RobustBench convention: a fixed prefix of the test split, so every run is evaluated on the same
    images. ``n=None`` returns the whole split; ``n`` larger than the split raises UserError.
    """
    ds = load_dataset(name, "test", data_dir, download, input_size=input_size)
    total = len(ds)
    if n is None:
        n = total
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise UserError(f"invalid number of evaluation images {n!r}: must be an integer >= 1")
    if n > total:
        raise UserError(f"asked for {n} test images but {ds.name.value} has {total} (in {ds.root})")
    n = int(n)
    if isinstance(ds, TensorImageDataset):
        return ds.images[:n].to(torch.float32).div_(255.0), ds.targets[:n].clone()
    xs = [ds[i][0] for i in range(n)]
    return torch.stack(xs), ds.targets[:n].clone()
