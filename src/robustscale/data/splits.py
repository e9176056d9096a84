"""The validation split and the training subset, both carved from the training split.

``train_val_indices(targets, train_subset, val_size, seed)`` first takes the validation images,
class-stratified, from the whole training split, then the training subset (class-stratified too)
from what is left, so the two never overlap and no test image is ever used. Both depend only on
``(labels, sizes, seed)``: the same on every rank, every resume and every machine.

Default validation size (``val_size: null``): ``min(1000, training images // 10)``. 1,000 images
give a standard error of at most 1.6 points on an accuracy, enough to tell epochs apart by a few
points; the 10 % cap keeps the per-epoch validation pass of a small run (PGD-k on every validation
image) from costing more than a small share of its training. The validation images come from
outside the training subset, so ``train_subset`` stays the number of images trained on (and a
run's training FLOPs do not depend on the split). ``val_size: 0`` disables the split (and draws the
subset as robustscale 0.1.0 did: uniformly, unstratified).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .datasets import TensorImageDataset, load_dataset, subset_indices
from .info import dataset_info
from .sampler import derive_seed

DEFAULT_VAL_MAX = 1000  # images; SE <= 1.6 points on an accuracy
DEFAULT_VAL_SHARE = 0.10  # of the training images
_VAL_STREAM, _SUBSET_STREAM = 11, 12  # mixed into the seeds so the two draws are independent


def default_val_size(train_images: int) -> int:
    """``min(1000, train_images // 10)`` (see the module docstring)."""
    return min(DEFAULT_VAL_MAX, int(train_images * DEFAULT_VAL_SHARE))


def resolve_val_size(val_size: int | None, train_images: int) -> int:
    """The validation size a config asks for: ``val_size``, or the default for ``train_images``."""
    return default_val_size(train_images) if val_size is None else int(val_size)


def class_quotas(counts: np.ndarray, k: int) -> np.ndarray:
    """How many of ``k`` draws each class gets: proportional to ``counts`` (largest remainders, ties to
    the lower class index), never more than a class holds. ``counts``: (K,) ints; returns (K,) ints."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= k <= total:
        raise ValueError(f"cannot draw {k} of {total} items")
    exact = counts * (k / total) if total else np.zeros(len(counts))
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(counts)), -(exact - quota)))  # largest remainder first
    for c in order[: k - int(quota.sum())]:
        quota[c] += 1
    return np.minimum(quota, counts)


def stratified_sample(labels: torch.Tensor, k: int, seed: int, *stream: int) -> torch.Tensor:
    """``k`` distinct positions of ``labels`` with each class's share kept (:func:`class_quotas`),
    uniformly at random within a class under ``(seed, *stream)``; sorted int64."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if len(labels) == 0 or k == 0:
        return torch.empty(0, dtype=torch.int64)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = class_quotas(counts.numpy(), k)
    g = torch.Generator().manual_seed(derive_seed(seed, *stream))
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:q]])
    return torch.cat(picked).sort().values


def train_val_indices(labels: torch.Tensor, train_subset: int | None, val_size: int | None, seed: int,
                      dataset: str = "the training split") -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` positions into the training split (sorted int64, disjoint).

    ``val_size`` None: :func:`default_val_size` of the training images (``train_subset``, else the
    whole split). ``train_subset`` None: every image not in the validation split.
    Raises UserError when the two do not fit in the split.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(labels)
    if train_subset is not None and train_subset > n:
        raise UserError(f"train_subset {train_subset} exceeds the {n} training images of {dataset}")
    n_val = resolve_val_size(val_size, train_subset if train_subset is not None else n)
    if n_val < 0:
        raise UserError(f"invalid val_size {n_val}: must be >= 0")
    if train_subset is not None and train_subset + n_val > n:
        raise UserError(f"train_subset {train_subset} + val_size {n_val} exceed the {n} training images of "
                        f"{dataset}; lower one of them")
    if n_val >= n:
        raise UserError(f"val_size {n_val} leaves no training images of the {n} in {dataset}")
    if n_val == 0 and train_subset is not None:
        # No validation split: the subset robustscale 0.1.0 drew (uniform, unstratified), so that a
        # config asking for 0.1.0's training (config.V1_TRAINING) trains on the very same images.
        return subset_indices(n, int(train_subset), seed), torch.empty(0, dtype=torch.int64)
    val = stratified_sample(labels, n_val, seed, _VAL_STREAM)
    rest = torch.ones(n, dtype=torch.bool)
    rest[val] = False
    pool = torch.nonzero(rest).flatten()
    if train_subset is None:
        return pool, val
    return pool[stratified_sample(labels[pool], int(train_subset), seed, _SUBSET_STREAM)], val


def split_of(cfg, real):
    """``(train, val)`` positions of ``cfg``'s training subset and validation split in ``real``."""
    name = getattr(getattr(real, "name", None), "value", None) or str(cfg.dataset)
    return train_val_indices(real.targets, cfg.train_subset, getattr(cfg, "val_size", None), int(cfg.seed), name)


def load_val_tensors(cfg):
    """The validation images of ``cfg`` as ``(x float32 (n, C, H, W) in [0, 1], y int64 (n,))``, without
    augmentation (image folders: resize + center crop). ``n`` may be 0 (``val_size: 0``)."""
    info = dataset_info(cfg.dataset)
    real = load_dataset(info.name, "train", cfg.data_dir, cfg.download, input_size=getattr(cfg, "input_size", None))
    _, val = split_of(cfg, real)
    if isinstance(real, TensorImageDataset):
        return real.images[val].to(torch.float32).div_(255.0), real.targets[val].clone()
    xs = [real[int(i)][0] for i in val]
    shape = (0, *real.image_shape)
    return (torch.stack(xs) if xs else torch.empty(shape)), real.targets[val].clone()


__all__ = ["DEFAULT_VAL_MAX", "DEFAULT_VAL_SHARE", "default_val_size", "resolve_val_size", "class_quotas",
           "stratified_sample", "train_val_indices", "split_of", "load_val_tensors"]
