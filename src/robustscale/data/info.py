"""Static facts about the supported datasets (one source of truth for classes, shapes, stats)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import UserError, choice


class DatasetName(str, enum.Enum):
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    FASHION_MNIST = "fashion_mnist"
    MNIST = "mnist"
    IMAGEFOLDER = "imagefolder"


@dataclass(frozen=True)
class DatasetInfo:
    name: DatasetName
    num_classes: int | None  # None: read from the folder tree
    in_chans: int
    input_size: tuple[int, int, int] | None  # (C, H, W); None: set by the transform
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int | None
    test_size: int | None
    description: str


DATASETS: dict[DatasetName, DatasetInfo] = {
    DatasetName.CIFAR10: DatasetInfo(
        DatasetName.CIFAR10, 10, 3, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
        50_000, 10_000, "CIFAR-10, torchvision pickle batches (cifar-10-batches-py/)"),
    DatasetName.CIFAR100: DatasetInfo(
        DatasetName.CIFAR100, 100, 3, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        50_000, 10_000, "CIFAR-100, torchvision pickle files (cifar-100-python/)"),
    DatasetName.FASHION_MNIST: DatasetInfo(
        DatasetName.FASHION_MNIST, 10, 1, (1, 28, 28), (0.2860,), (0.3530,),
        60_000, 10_000, "Fashion-MNIST, IDX files (gz or raw)"),
    DatasetName.MNIST: DatasetInfo(
        DatasetName.MNIST, 10, 1, (1, 28, 28), (0.1307,), (0.3081,),
        60_000, 10_000, "MNIST, IDX files (gz or raw)"),
    DatasetName.IMAGEFOLDER: DatasetInfo(
        DatasetName.IMAGEFOLDER, None, 3, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        None, None, "ImageNet-style folder tree: <root>/train/<class>/*.JPEG and <root>/val/<class>/*"),
}


def dataset_info(name: str | DatasetName) -> DatasetInfo:
    """Look up a dataset by name; unknown names raise UserError listing the valid ones."""
    return DATASETS[choice(DatasetName, name, what="dataset")]


def check_eval_subset(name: str | DatasetName, eval_subset: int) -> None:
    """Refuse a per-epoch test subset larger than the test set (it would be read as the whole set, silently)."""
    info = dataset_info(name)
    if info.test_size is not None and eval_subset > info.test_size:
        raise UserError(f"invalid eval_subset {eval_subset}: {info.name.value} has {info.test_size:,} test images")


def dataset_normalization(name: str | DatasetName) -> dict[str, tuple[float, ...]]:
    """``{"mean": ..., "std": ...}`` of a dataset's pixels, the keyword arguments of
    ``robustscale.models.create_model`` (models know no datasets: their callers pass these)."""
    info = dataset_info(name)
    return {"mean": info.mean, "std": info.std}
