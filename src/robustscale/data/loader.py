"""The training loader: subset, generated-data mixing, augmentation, sharding across ranks."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .datasets import FolderDataset, TensorImageDataset, load_dataset
from .generated import GeneratedImages, load_generated
from .info import dataset_info
from .sampler import BatchKey, MixedBatchSampler
from .splits import split_of
from .transforms import folder_train_transform, random_crop_flip, to_float, train_augmentation

# In-memory data (CIFAR, MNIST-like, generated .npz) is cropped/flipped a whole batch at a time in
# the main process: ~64k CIFAR images/s on one core, where loader workers measured 2.5-4x slower
# (shipping float batches between processes costs more than making them). So cfg.workers applies
# to image folders, which decode JPEG/PNG files one by one.


class TrainBatches(Dataset):
    """Turns a :class:`BatchKey` into a batch ``(x float32 (N, C, H, W) in [0, 1], y int64 (N,))``.

    Real images come first, then generated ones. Augmentation is seeded by ``key.seed`` only, so a
    batch is the same whatever the number of loader workers.
    """

    def __init__(self, real: TensorImageDataset | FolderDataset, generated: GeneratedImages | None = None,
                 augment: bool = True):
        self.real, self.generated, self.augment = real, generated, augment
        self.crop_flip = train_augmentation(real.name) if augment else None
        self.folder_train = folder_train_transform(real.input_size) \
            if augment and isinstance(real, FolderDataset) else None

    def __len__(self) -> int:  # number of distinct images (the sampler decides the epoch length)
        return len(self.real) + (len(self.generated) if self.generated is not None else 0)

    def __getitem__(self, key: BatchKey):
        gen = self.generated
        y = self.real.targets[key.real]
        if gen is not None and len(key.generated):
            y = torch.cat([y, gen.targets[key.generated]])
        if isinstance(self.real, TensorImageDataset):
            x = self.real.images[key.real]
            if gen is not None and len(key.generated):
                x = torch.cat([x, gen.images[key.generated]])
            if self.crop_flip is not None:
                g = torch.Generator().manual_seed(key.seed)
                x = random_crop_flip(x, self.crop_flip.padding, self.crop_flip.flip, g)
            return to_float(x), y
        return self._folder_batch(key), y

    def _folder_batch(self, key: BatchKey) -> torch.Tensor:
        """Per-image v2 transforms under a private RNG (the global one is left untouched)."""
        out = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key.seed)
            for i in key.real.tolist():
                img = self.real.load_image(i)
                out.append(self.folder_train(img) if self.folder_train else self.real.transform(img))
            if self.generated is not None:
                for i in key.generated.tolist():
                    img = self.generated.images[i]
                    out.append(self.folder_train(img) if self.folder_train else to_float(img))
        return torch.stack(out)


def _identity(batch):
    return batch


def seed_worker(worker_id: int) -> None:
    """Seed numpy/random in each worker from torch's per-worker seed (derived from the loader generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(cfg, rank: int = 0, world_size: int = 1, *, workers: int | None = None,
                       micro_batch_size: int | None = None) -> DataLoader:
    """Training batches ``(x float32 (N, C, H, W) in [0, 1], y int64 (N,))`` for ``rank`` of ``world_size``.

    N = ``micro_batch_size`` (default ``cfg.batch_size // world_size``); each rank gets
    ``cfg.batch_size // (world_size * N)`` consecutive batches per step (gradient accumulation), and
    a step's batches are the same images whatever the world size (see ``MixedBatchSampler``).
    Leaves out the validation split (``cfg.val_size``, see
    ``robustscale.data.splits``) and applies ``cfg.train_subset`` (a class-stratified random subset of
    the rest chosen with ``cfg.seed``, the same on every rank), mixes ``cfg.generated_data`` at ``cfg.generated_fraction``
    of every batch, augments when ``cfg.augment``. Call ``loader.sampler.set_epoch(epoch)`` before each
    epoch; ``loader.sampler.state_dict()`` holds the epoch for resuming. ``loader.dataset.real`` /
    ``.generated`` are the underlying data (``len()`` gives image counts). ``workers``: loader
    processes; default ``cfg.workers`` for image folders and 0 for in-memory data (see above).
    Batches do not depend on the number of workers.
    """
    info = dataset_info(cfg.dataset)
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"invalid rank {rank} for world size {world_size}")
    per_rank = cfg.batch_size // world_size
    if per_rank < 1:
        raise UserError(f"batch_size {cfg.batch_size} is smaller than the world size {world_size}; "
                        f"each rank needs at least one image per step")
    micro = per_rank if micro_batch_size is None else int(micro_batch_size)
    if micro < 1 or per_rank % micro:
        raise UserError(f"micro_batch_size {micro} does not divide the {per_rank} images per rank of batch_size "
                        f"{cfg.batch_size} over {world_size} rank(s)")
    real = load_dataset(info.name, "train", cfg.data_dir, cfg.download, input_size=getattr(cfg, "input_size", None))
    # The validation split (checkpoint selection) is carved out first; the subset comes from the rest.
    train_idx, _ = split_of(cfg, real)
    if len(train_idx) != len(real):
        real = real.subset(train_idx)
    generated = None
    if cfg.generated_data and cfg.generated_fraction > 0:
        generated = load_generated(cfg.generated_data, real.image_shape, len(real.classes))
    sampler = MixedBatchSampler(len(real), micro, num_generated=len(generated) if generated else 0,
                                generated_fraction=cfg.generated_fraction, rank=rank, world_size=world_size,
                                seed=cfg.seed, accumulation=per_rank // micro)
    dataset = TrainBatches(real, generated, augment=cfg.augment)
    if workers is None:
        workers = int(cfg.workers) if isinstance(real, FolderDataset) else 0
    workers = max(int(workers), 0)
    return DataLoader(
        dataset,
        batch_size=None,  # the sampler yields whole batches
        sampler=sampler,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(int(cfg.seed)),
        persistent_workers=workers > 0,
    )


def build_mixup(cfg, num_classes: int, world_size: int = 1, micro_batch_size: int | None = None):
    """``timm.data.Mixup`` for ``cfg.mixup_alpha`` / ``cfg.cutmix_alpha`` (> 0), else None.

    Applied by the training loop as ``x, y_soft = mixup(x, y)`` with a soft-target loss; it folds in
    ``cfg.label_smoothing``. timm mixes a batch with its reverse, so the per-rank (micro-)batch must be even.
    """
    if cfg.mixup_alpha <= 0 and cfg.cutmix_alpha <= 0:
        return None
    if cfg.mixup_alpha < 0 or cfg.cutmix_alpha < 0:
        raise UserError(f"invalid mixup_alpha {cfg.mixup_alpha} / cutmix_alpha {cfg.cutmix_alpha}: must be >= 0")
    per_rank = cfg.batch_size // world_size if micro_batch_size is None else int(micro_batch_size)
    if per_rank % 2:
        raise UserError(f"mixup/cutmix needs an even per-rank batch; batch_size {cfg.batch_size} over "
                        f"{world_size} rank(s) gives {per_rank}"
                        + (" per micro-batch" if micro_batch_size is not None else ""))
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=1.0, switch_prob=0.5,
                 mode="batch", label_smoothing=cfg.label_smoothing, num_classes=num_classes)


__all__ = ["TrainBatches", "build_train_loader", "build_mixup", "seed_worker"]
