"""Data: datasets in their real on-disk formats, augmentation, generated-data mixing, subsets.

Public API::

    load_dataset(name, split, data_dir=None, download=False)   # (float32 CxHxW in [0,1], int)
    build_train_loader(cfg, rank=0, world_size=1)              # (x float32 NxCxHxW, y int64 N)
    load_eval_tensors(name, n=None, data_dir=None, download=False)  # first n test images
    load_val_tensors(cfg)                                      # the validation split (from the train split)
    build_mixup(cfg, num_classes)                              # timm Mixup or None
    find_data_root(name, data_dir=None, download=False)        # folder holding the files
    dataset_info(name)                                         # classes, shape, mean/std
    dataset_normalization(name)                                # {mean, std}: create_model's kwargs
"""
from .datasets import (FolderDataset, TensorImageDataset, load_dataset, load_eval_tensors,
                       subset_indices)
from .generated import GeneratedImages, load_generated
from .info import DATASETS, DatasetInfo, DatasetName, check_eval_subset, dataset_info, dataset_normalization
from .loader import TrainBatches, build_mixup, build_train_loader
from .locations import find_data_root, locate
from .sampler import BatchKey, MixedBatchSampler
from .splits import default_val_size, load_val_tensors, train_val_indices

__all__ = [
    "load_dataset", "build_train_loader", "load_eval_tensors", "build_mixup", "find_data_root", "locate",
    "dataset_info", "check_eval_subset", "dataset_normalization", "DatasetName", "DatasetInfo", "DATASETS", "TensorImageDataset",
    "FolderDataset",
    "GeneratedImages", "load_generated", "MixedBatchSampler", "BatchKey", "TrainBatches", "subset_indices",
    "load_val_tensors", "train_val_indices", "default_val_size",
]
