"""The training loader: augmentation, determinism, subsets, DDP sharding, generated-data mixing, mixup."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from robustscale.config import TrainConfig
from robustscale.data import (MixedBatchSampler, build_mixup, build_train_loader, load_dataset,
                              train_val_indices)
from robustscale.data.transforms import random_crop_flip
from robustscale.errors import UserError


def _cfg(root, **kw) -> TrainConfig:
    # val_size 0: these tests see the whole training split (the split itself: tests/data/test_splits.py)
    base = dict(dataset="fashion_mnist", data_dir=str(root), batch_size=16, workers=0, seed=3, val_size=0,
                select="last")
    base.update(kw)
    return TrainConfig.from_dict(base)


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def _row_ids(x: torch.Tensor, images: torch.Tensor) -> list[int]:
    """Which rows of ``images`` (uint8 N,C,H,W) the float batch ``x`` holds (exact match)."""
    flat = images.reshape(len(images), -1).float() / 255
    equal = (x.reshape(len(x), 1, -1) == flat[None]).all(2)  # (batch, N)
    assert torch.all(equal.sum(1) >= 1), "a batch image is not in the dataset"
    return equal.float().argmax(1).tolist()

# ----------------------------------------------------------------------------------- augmentation
def test_random_crop_flip_is_a_crop_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (48, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = random_crop_flip(x, 2, True, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):  # brute force: exactly which window / mirror produced each output
        matches = [(oy, ox, f) for oy, ox, f in itertools.product(range(5), range(5), (False, True))
                   if torch.equal(out[i], (lambda w: w.flip(2) if f else w)(padded[i, :, oy:oy + 8, ox:ox + 8]))]
        assert matches, f"output {i} is not a crop of its padded input"
        seen.update(matches)
    assert {f for _, _, f in seen} == {False, True}  # both flips occur
    assert len({(oy, ox) for oy, ox, _ in seen}) > 10  # offsets spread over the 5x5 grid
    no_flip = random_crop_flip(x, 0, False, g)
    assert torch.equal(no_flip, x)


def test_train_batches_shapes_and_augmentation(mnist_dir):
    real = load_dataset("fashion_mnist", "train", data_dir=mnist_dir)
    loader = build_train_loader(_cfg(mnist_dir, augment=False))
    assert len(loader) == 64 // 16
    batches = _epoch(loader, 0)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (64, 1, 28, 28)
    ids = _row_ids(x, real.images)
    assert sorted(ids) == list(range(64))  # one epoch = a permutation of the training set
    assert y.tolist() == real.targets[ids].tolist()
    aug = _epoch(build_train_loader(_cfg(mnist_dir, augment=True)), 0)[0][0]
    assert 0 <= aug.min() and aug.max() <= 1 and aug.shape == (16, 1, 28, 28)
    assert not torch.equal(aug, batches[0][0])  # padding/crop changed something


# ----------------------------------------------------------------------------------- determinism
def test_order_depends_only_on_seed_and_epoch(mnist_dir):
    a = build_train_loader(_cfg(mnist_dir))
    b = build_train_loader(_cfg(mnist_dir))
    ea, eb = _epoch(a, 1), _epoch(b, 1)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(ea, eb))
    e2 = _epoch(a, 2)
    assert not torch.equal(torch.cat([p[1] for p in ea]), torch.cat([p[1] for p in e2]))
    # Worker processes do not change a batch (augmentation is seeded per batch, not per worker).
    w = build_train_loader(_cfg(mnist_dir), workers=2)
    assert w.num_workers == 2
    ew = _epoch(w, 1)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(ea, ew))
    # Resuming: the state round-trips, and a different seed is refused.
    s = MixedBatchSampler(64, 16, seed=3)
    s.load_state_dict(a.sampler.state_dict())
    assert s.epoch == 2
    with pytest.raises(UserError, match="saved with seed 3"):
        MixedBatchSampler(64, 16, seed=4).load_state_dict(a.sampler.state_dict())


def test_train_subset_is_seeded(mnist_dir):
    real = load_dataset("fashion_mnist", "train", data_dir=mnist_dir)
    first = train_val_indices(real.targets, 20, 0, seed=3)[0]
    assert torch.equal(first, train_val_indices(real.targets, 20, 0, seed=3)[0]) and len(set(first.tolist())) == 20
    assert not torch.equal(first, train_val_indices(real.targets, 20, 0, seed=4)[0])
    loader = build_train_loader(_cfg(mnist_dir, train_subset=20, batch_size=5, augment=False))
    assert len(loader.dataset.real) == 20 and len(loader) == 4
    ids = _row_ids(torch.cat([b[0] for b in _epoch(loader, 0)]), real.images)
    assert sorted(ids) == first.tolist()
    with pytest.raises(UserError, match="train_subset 65 exceeds the 64 training images"):
        build_train_loader(_cfg(mnist_dir, train_subset=65))


# ----------------------------------------------------------------------------------- distributed
def test_ranks_get_disjoint_shards_covering_the_epoch(mnist_dir):
    real = load_dataset("fashion_mnist", "train", data_dir=mnist_dir)
    cfg = _cfg(mnist_dir, batch_size=16, augment=False)
    single = torch.cat([b[1] for b in _epoch(build_train_loader(cfg), 5)])
    shards = []
    for rank in range(2):
        loader = build_train_loader(cfg, rank=rank, world_size=2)
        batches = _epoch(loader, 5)
        assert len(batches) == 4 and all(len(b[0]) == 8 for b in batches)  # batch_size // world_size
        shards.append([_row_ids(b[0], real.images) for b in batches])
    r0, r1 = (set(itertools.chain(*s)) for s in shards)
    assert not r0 & r1 and r0 | r1 == set(range(64))
    # Step k of rank 0 + step k of rank 1 = step k of the single-process global batch.
    interleaved = [i for k in range(4) for i in shards[0][k] + shards[1][k]]
    assert real.targets[interleaved].tolist() == single.tolist()
    with pytest.raises(UserError, match="smaller than the world size 32"):
        build_train_loader(cfg, rank=0, world_size=32)


# ----------------------------------------------------------------------------------- generated data
def _write_npz(path: Path, n=50, value=200, shape=(28, 28, 1), **overrides) -> Path:
    arrays = {"image": np.full((n, *shape), value, np.uint8), "label": np.arange(n) % 10}
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("batch,world,expect_gen", [(128, 1, 90), (128, 2, 45), (10, 1, 7)])
def test_generated_fraction_is_exact_in_every_batch(tmp_path, batch, world, expect_gen):
    from robustscale.testing import write_mnist_like

    root = write_mnist_like(tmp_path / "m", n_train=300, n_test=8)
    npz = _write_npz(tmp_path / "gen.npz", value=255)  # all-white images: recognisable
    cfg = _cfg(root, batch_size=batch, augment=False, generated_data=str(npz), generated_fraction=0.7)
    loader = build_train_loader(cfg, rank=world - 1, world_size=world)
    assert len(loader) == -(-300 // batch)  # an epoch = as many images as the real set
    for x, y in _epoch(loader, 0):
        white = (x.flatten(1) == 1.0).all(1)
        assert len(x) == batch // world and int(white.sum()) == expect_gen
        assert not white[: batch // world - expect_gen].any()  # real first, then generated


def test_generated_data_is_augmented_and_labelled(tmp_path, mnist_dir):
    gen_labels = np.full(50, 7)
    npz = _write_npz(tmp_path / "gen.npz", value=255, label=gen_labels)
    cfg = _cfg(mnist_dir, batch_size=10, generated_data=str(npz), generated_fraction=0.5)
    x, y = _epoch(build_train_loader(cfg), 0)[0]
    assert y[5:].tolist() == [7] * 5
    assert (x[5:] == 0).any()  # zero padding entered some crops of the all-white images


@pytest.mark.parametrize("arrays,message", [
    ({"image": np.zeros((4, 28, 28, 1), np.uint8)}, "lacks array 'label'"),
    ({"image": np.zeros((4, 28, 28, 1), np.float32), "label": np.zeros(4, int)}, "are float32; expected uint8"),
    ({"image": np.zeros((4, 32, 32, 3), np.uint8), "label": np.zeros(4, int)}, r"shape \(4, 32, 32, 3\); expected \(N, 28, 28, 1\)"),
    ({"image": np.zeros((4, 28, 28, 1), np.uint8), "label": np.zeros(3, int)}, r"label has shape \(3,\) for 4 images"),
    ({"image": np.zeros((4, 28, 28, 1), np.uint8), "label": np.array([0, 1, 2, 10])}, "span 0..10; the dataset has classes 0..9"),
])
def test_generated_data_errors(tmp_path, mnist_dir, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message):
        build_train_loader(_cfg(mnist_dir, generated_data=str(path)))


def test_generated_file_unreadable_or_missing(tmp_path, mnist_dir):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(UserError, match="not a valid .npz"):
        build_train_loader(_cfg(mnist_dir, generated_data=str(bad)))
    with pytest.raises(UserError, match="generated data file not found"):
        build_train_loader(_cfg(mnist_dir, generated_data=str(tmp_path / "none.npz")))
    npz = _write_npz(tmp_path / "gen.npz")
    with pytest.raises(UserError, match="leaves no real images"):
        build_train_loader(_cfg(mnist_dir, batch_size=1, generated_data=str(npz)))


# ----------------------------------------------------------------------------------- cifar + mixup
def test_cifar_loader_and_mixup(cifar10_dir):
    root, (train_x, train_y, _, _) = cifar10_dir
    cfg = TrainConfig.from_dict(dict(dataset="cifar10", data_dir=str(root), batch_size=4, workers=0,
                                     cutmix_alpha=1.0, mixup_alpha=0.8, val_size=0, select="last"))
    loader = build_train_loader(cfg)
    assert len(loader) == 5
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32)
    mixup = build_mixup(cfg, num_classes=10)
    xm, ym = mixup(x.clone(), y)
    assert xm.shape == x.shape and ym.shape == (4, 10)
    assert torch.allclose(ym.sum(1), torch.ones(4))
    # timm mixes each image with the reversed batch: targets carry mass on y[i] and y[-1-i] only.
    for i in range(4):
        support = set(torch.nonzero(ym[i] > 0).flatten().tolist())
        assert support <= {int(y[i]), int(y[3 - i])}
    assert build_mixup(cfg.replace(cutmix_alpha=0.0, mixup_alpha=0.0), 10) is None
    with pytest.raises(UserError, match="even per-rank batch"):
        build_mixup(cfg.replace(batch_size=6), 10, world_size=2)


def test_imagefolder_train_loader(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("val", 1)):
        for cls in ("a", "b"):
            (tmp_path / "f" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((12, 15, 3), 40 * i + 60, np.uint8)).save(tmp_path / "f" / split / cls / f"{i}.png")
    cfg = TrainConfig.from_dict(dict(dataset="imagefolder", data_dir=str(tmp_path / "f"), batch_size=3, workers=0,
                                     val_size=0, select="last"))
    cfg.input_size = 8  # imagefolder side (the training config may carry it; default 224)
    loader = build_train_loader(cfg)
    before = torch.random.get_rng_state()
    batches = _epoch(loader, 0)
    assert torch.equal(before, torch.random.get_rng_state())  # private RNG for per-image transforms
    assert [b[0].shape for b in batches] == [(3, 3, 8, 8)] * 2
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    again = _epoch(loader, 0)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(batches, again))
