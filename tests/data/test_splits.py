"""The validation split: carved from the training split, class-stratified, disjoint from the training subset,
deterministic by seed; its size rules and the config errors around checkpoint selection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustscale.config import TrainConfig
from robustscale.data import build_train_loader, load_dataset, load_val_tensors, train_val_indices
from robustscale.data.splits import class_quotas, default_val_size, stratified_sample
from robustscale.errors import UserError


def _cfg(root, **kw) -> TrainConfig:
    return TrainConfig.from_dict({"dataset": "fashion_mnist", "data_dir": str(root), "batch_size": 4, "workers": 0,
                                  "seed": 5, **kw})


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in (x * 255).round().to(torch.uint8).reshape(len(x), -1).numpy()}


def test_class_quotas_by_hand():
    # exact shares 2.5, 1.5, 1.0: floors 2, 1, 1; the one left goes to the larger remainder, ties to class 0
    assert class_quotas(np.array([5, 3, 2]), 5).tolist() == [3, 1, 1]
    assert class_quotas(np.array([10, 10, 10]), 7).tolist() == [3, 2, 2]
    assert class_quotas(np.array([1, 99]), 100).tolist() == [1, 99]
    assert class_quotas(np.array([4, 6]), 0).tolist() == [0, 0]
    with pytest.raises(ValueError):
        class_quotas(np.array([2, 2]), 5)


def test_stratified_sample_keeps_each_class_share():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100, generator=torch.Generator().manual_seed(1))]
    idx = stratified_sample(labels, 10, 7)
    assert torch.bincount(labels[idx], minlength=3).tolist() == [5, 3, 2]
    assert len(set(idx.tolist())) == 10 and torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, stratified_sample(labels, 10, 7))
    assert not torch.equal(idx, stratified_sample(labels, 10, 8))


def test_default_size_is_the_smaller_of_1000_and_a_tenth():
    assert default_val_size(60_000) == 1000 and default_val_size(8192) == 819 and default_val_size(50) == 5


def test_split_is_disjoint_stratified_and_seeded():
    labels = torch.arange(600) % 10
    train, val = train_val_indices(labels, 200, None, seed=0)
    assert len(val) == 20 and len(train) == 200
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(labels[val], minlength=10).tolist() == [2] * 10
    assert torch.bincount(labels[train], minlength=10).tolist() == [20] * 10
    # Validation images do not depend on the subset size (every run of a data-size grid selects on
    # images none of them trains on is not promised, but one run never trains on its own).
    again = train_val_indices(labels, 200, None, seed=0)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    other = train_val_indices(labels, 200, None, seed=1)
    assert not torch.equal(other[1], val)
    whole, val_all = train_val_indices(labels, None, None, seed=0)
    assert len(val_all) == 60 and len(whole) == 540 and not set(whole.tolist()) & set(val_all.tolist())
    none_train, none_val = train_val_indices(labels, None, 0, seed=0)
    assert len(none_val) == 0 and torch.equal(none_train, torch.arange(600))


def test_split_errors():
    labels = torch.arange(64) % 10
    with pytest.raises(UserError, match="train_subset 60 \\+ val_size 6 exceed the 64 training images"):
        train_val_indices(labels, 60, 6, seed=0)
    with pytest.raises(UserError, match="train_subset 65 exceeds the 64 training images"):
        train_val_indices(labels, 65, 0, seed=0)
    with pytest.raises(UserError, match="val_size 64 leaves no training images"):
        train_val_indices(labels, None, 64, seed=0)


def test_loader_and_validation_tensors_use_disjoint_training_images(mnist_dir):
    cfg = _cfg(mnist_dir, train_subset=40, val_size=8, augment=False)
    real = load_dataset("fashion_mnist", "train", data_dir=mnist_dir)
    test = load_dataset("fashion_mnist", "test", data_dir=mnist_dir)
    loader = build_train_loader(cfg)
    assert len(loader.dataset.real) == 40
    x_val, y_val = load_val_tensors(cfg)
    assert x_val.shape == (8, 1, 28, 28) and x_val.dtype == torch.float32 and y_val.dtype == torch.int64
    train_rows = _rows(loader.dataset.real.images.float() / 255)
    val_rows = _rows(x_val)
    assert len(val_rows) == 8 and not train_rows & val_rows
    assert val_rows <= _rows(real.images.float() / 255)  # from the training split ...
    assert not val_rows & _rows(test.images.float() / 255)  # ... never a test image
    _, val = train_val_indices(real.targets, 40, 8, seed=5)
    assert y_val.tolist() == real.targets[val].tolist()
    assert len(load_val_tensors(cfg.replace(val_size=0, select="last"))[0]) == 0


@pytest.mark.parametrize("kw, message", [
    ({"train_subset": 100, "val_size": 101}, "invalid val_size 101: is larger than the training subset"),
    ({"val_size": -1}, "invalid val_size -1: must be >= 0"),
    ({"val_size": 0}, "invalid val_size 0: leaves select best on val nothing to measure"),
    ({"select_split": "test", "eval_subset": 0}, "invalid eval_subset 0: leaves select best on test"),
    ({"method": "pgd", "eval_attack_steps": 0}, "cannot produce pgd_robust_acc"),
    ({"select": "first"}, "select"),
    ({"select_split": "train"}, "select_split"),
])
def test_selection_config_errors(kw, message):
    with pytest.raises(UserError, match=message):
        TrainConfig.from_dict(kw)


def test_selection_config_defaults_and_metric():
    cfg = TrainConfig()
    assert (cfg.val_size, cfg.select.value, cfg.select_split.value) == (None, "best", "val")
    assert cfg.selection_metric == "pgd_robust_acc"
    assert TrainConfig(method="standard").selection_metric == "clean_acc"
    # select last needs neither a split nor a metric
    TrainConfig.from_dict({"val_size": 0, "select": "last", "eval_attack_steps": 0})
    TrainConfig.from_dict({"method": "standard", "eval_attack_steps": 0})
