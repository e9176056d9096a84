"""Reading every supported on-disk format through the real code paths, and every way it can fail."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustscale.data import find_data_root, load_dataset, load_eval_tensors
from robustscale.errors import UserError
from robustscale.testing import learnable_images, write_idx, write_mnist_like

from .conftest import CIFAR10_CLASSES, write_cifar100


# ----------------------------------------------------------------------------------- CIFAR
def test_cifar10_matches_torchvision_reader(cifar10_dir, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    root, (train_x, train_y, test_x, test_y) = cifar10_dir
    train = load_dataset("cifar10", "train", data_dir=root)
    test = load_dataset("cifar10", "test", data_dir=root)
    assert len(train) == 20 and len(test) == 6
    assert train.classes == CIFAR10_CLASSES
    assert train.root == root / "cifar-10-batches-py"
    # Independent: our HWC source arrays, and torchvision's own reader (MD5 check off: tiny files).
    assert torch.equal(train.images, torch.from_numpy(train_x).permute(0, 3, 1, 2))
    assert train.targets.tolist() == train_y.tolist()
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    tv = tv_cifar.CIFAR10(str(root), train=False)
    assert np.array_equal(tv.data, test.images.permute(0, 2, 3, 1).numpy())
    assert tv.targets == test.targets.tolist() and tv.classes == test.classes
    x, y = test[3]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert torch.allclose(x, torch.from_numpy(test_x[3]).permute(2, 0, 1).float() / 255) and y == test_y[3]


def test_cifar100_fine_labels(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    train_x, train_y, test_x, test_y = write_cifar100(tmp_path)
    # Found through $ROBUSTSCALE_DATA (the folder that contains cifar-100-python/).
    monkeypatch.setenv("ROBUSTSCALE_DATA", str(tmp_path))
    train = load_dataset("cifar100", "train")
    assert len(train) == 12 and len(train.classes) == 100 and train.classes[7] == "fine7"
    assert train.targets.tolist() == train_y.tolist()
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    tv = tv_cifar.CIFAR100(str(tmp_path), train=True)
    assert np.array_equal(tv.data, train.images.permute(0, 2, 3, 1).numpy())
    assert tv.targets == train.targets.tolist()


def test_cifar_corrupt_and_incomplete(cifar10_dir):
    root, _ = cifar10_dir
    folder = root / "cifar-10-batches-py"
    (folder / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match=r"corrupt CIFAR file .*data_batch_3"):
        load_dataset("cifar10", "train", data_dir=root)
    import pickle

    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({"labels": [1, 2], "data": np.zeros((2, 100), np.uint8)}, fh)
    with pytest.raises(UserError, match=r"data_batch_3: 'data' is uint8 \(2, 100\), expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", "train", data_dir=root)
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({"labels": [1, 2, 3], "data": np.zeros((2, 3072), np.uint8)}, fh)
    with pytest.raises(UserError, match="image/label count mismatch"):
        load_dataset("cifar10", "train", data_dir=root)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"incomplete: missing data_batch_3"):
        load_dataset("cifar10", "test", data_dir=root)


# ----------------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("compress", [True, False])
def test_idx_gz_and_raw(tmp_path, compress):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    root = write_mnist_like(tmp_path / "m", n_train=40, n_test=24, compress=compress)
    train = load_dataset("mnist", "train", data_dir=root)
    test = load_dataset("mnist", "test", data_dir=root)
    assert (len(train), len(test)) == (40, 24) and train.image_shape == (1, 28, 28)
    assert train.classes == [str(d) for d in range(10)]
    expected_x, expected_y = learnable_images(24, seed=1)  # write_mnist_like's test split uses seed + 1
    assert torch.equal(test.images[:, 0], torch.from_numpy(expected_x[..., 0]))
    assert test.targets.tolist() == expected_y.tolist()
    # torchvision's IDX reader on the raw bytes agrees.
    raw = tmp_path / "raw"
    raw.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        src = root / (stem + (".gz" if compress else ""))
        (raw / stem).write_bytes(gzip.decompress(src.read_bytes()) if compress else src.read_bytes())
    assert torch.equal(read_image_file(str(raw / "train-images-idx3-ubyte")), train.images[:, 0])
    assert torch.equal(read_label_file(str(raw / "train-labels-idx1-ubyte")), train.targets)


def test_idx_torchvision_layout_under_env(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "store" / "FashionMNIST" / "raw", n_train=16, n_test=8)
    monkeypatch.setenv("ROBUSTSCALE_DATA", str(tmp_path / "store"))
    assert find_data_root("fashion_mnist") == tmp_path / "store" / "FashionMNIST" / "raw"
    assert len(load_dataset("fashion_mnist", "test")) == 8


def test_search_order_data_dir_before_env(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "a", n_train=10, n_test=4)
    write_mnist_like(tmp_path / "b" / "mnist", n_train=12, n_test=6)
    monkeypatch.setenv("ROBUSTSCALE_DATA", str(tmp_path / "b"))
    assert len(load_dataset("mnist", "test", data_dir=tmp_path / "a")) == 4
    assert len(load_dataset("mnist", "test")) == 6
    # A data_dir without the files falls through to $ROBUSTSCALE_DATA (the documented search order).
    (tmp_path / "empty").mkdir()
    assert len(load_dataset("mnist", "test", data_dir=tmp_path / "empty")) == 6
    # One that does not exist is a typo: an error naming it, not a silent fall-through.
    with pytest.raises(UserError, match=f"--data-dir {tmp_path / 'typo'} does not exist"):
        load_dataset("mnist", "test", data_dir=tmp_path / "typo")


def _idx_error(root: Path) -> str:
    with pytest.raises(UserError) as info:
        load_dataset("mnist", "train", data_dir=root)
    return str(info.value)


def test_idx_corrupt_files(mnist_dir):
    images = mnist_dir / "train-images-idx3-ubyte.gz"
    labels = mnist_dir / "train-labels-idx1-ubyte.gz"
    good_images, good_labels = images.read_bytes(), labels.read_bytes()

    shutil.copy(labels, images)  # a labels file where images belong
    assert "magic number 2049, expected 2051 (images file)" in _idx_error(mnist_dir)

    payload = gzip.decompress(good_images)
    images.write_bytes(gzip.compress(payload[:-100]))  # truncated data
    assert "header says 64x28x28 = 50176 bytes of images, the file holds 50076" in _idx_error(mnist_dir)

    images.write_bytes(good_images[:200])  # truncated gzip stream
    assert f"cannot read {images}" in _idx_error(mnist_dir)

    images.write_bytes(good_images)
    write_idx(labels, np.zeros(63, np.uint8))
    assert "image/label count mismatch" in _idx_error(mnist_dir) and "63 labels" in _idx_error(mnist_dir)

    write_idx(labels, np.full(64, 10, np.uint8))
    assert "label 10 but the dataset has 10 classes" in _idx_error(mnist_dir)

    labels.write_bytes(good_labels)
    assert len(load_dataset("mnist", "train", data_dir=mnist_dir)) == 64  # the cache saw the rewrite


def test_unknown_name_split_and_missing(tmp_path):
    with pytest.raises(UserError, match=r"unknown dataset 'cifar11'; valid: cifar10, cifar100, fashion_mnist"):
        load_dataset("cifar11", "train")
    with pytest.raises(UserError, match=r"unknown split 'val'; valid: train, test"):
        load_dataset("mnist", "val")
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", "train", data_dir=tmp_path / "nothing")
    msg = str(info.value)
    assert "\n" not in msg
    assert str(tmp_path / "nothing") in msg and str(tmp_path / "xdg-cache" / "robustscale" / "data") in msg
    assert "--download" in msg and "cifar-10-batches-py/" in msg
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path / "nothing")


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got:\n<urlopen>")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(UserError) as info:
        find_data_root("mnist", tmp_path / "dl", download=True)
    assert str(info.value).startswith(f"downloading mnist into {tmp_path / 'dl'} failed: Error downloading")
    assert "\n" not in str(info.value)


def test_download_goes_to_data_dir_then_is_found(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_mnist(root, train, download):  # what torchvision leaves behind: <root>/MNIST/raw/*
        calls.append((root, train, download))
        write_mnist_like(Path(root) / "MNIST" / "raw", n_train=8, n_test=4, compress=False)

    monkeypatch.setattr(tvd, "MNIST", fake_mnist)
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "dl", download=True)
    assert ds.root == tmp_path / "dl" / "MNIST" / "raw" and len(ds) == 4
    assert calls == [(str(tmp_path / "dl"), True, True), (str(tmp_path / "dl"), False, True)]
    load_dataset("mnist", "train", data_dir=tmp_path / "dl", download=True)  # found: no second download
    assert len(calls) == 2


# ----------------------------------------------------------------------------------- eval tensors
def test_load_eval_tensors_first_n(mnist_dir):
    test = load_dataset("fashion_mnist", "test", data_dir=mnist_dir)
    x, y = load_eval_tensors("fashion_mnist", 10, data_dir=mnist_dir)
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, torch.stack([test[i][0] for i in range(10)]))
    assert y.tolist() == [test[i][1] for i in range(10)]
    assert len(load_eval_tensors("fashion_mnist", None, data_dir=mnist_dir)[0]) == 32
    with pytest.raises(UserError, match="asked for 33 test images but fashion_mnist has 32"):
        load_eval_tensors("fashion_mnist", 33, data_dir=mnist_dir)


# ----------------------------------------------------------------------------------- image folder
def _write_folder(root: Path, colors: dict[str, list[tuple[int, int, int]]], split: str, size=(20, 26)) -> None:
    from PIL import Image

    for cls, cols in colors.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(cols):
            Image.new("RGB", size, c).save(root / split / cls / f"img{i}.png")


def test_imagefolder_resize_crop_and_balanced_test_order(tmp_path):
    root = tmp_path / "imnet"
    colors = {"cat": [(255, 0, 0), (250, 0, 0)], "dog": [(0, 255, 0), (0, 250, 0), (0, 245, 0)], "emu": [(0, 0, 255)]}
    _write_folder(root, colors, "train")
    _write_folder(root, {"cat": [(10, 20, 30), (11, 20, 30)], "dog": [(40, 50, 60)], "emu": [(70, 80, 90)]}, "val")
    train = load_dataset("imagefolder", "train", data_dir=root, input_size=16)
    assert train.classes == ["cat", "dog", "emu"] and len(train) == 6
    x, y = train[2]  # ImageFolder order: class by class, files sorted
    assert x.shape == (3, 16, 16) and y == 1
    # A solid colour resizes to itself in uint8; uint8 -> float32 in [0, 1] then costs <= 2 roundings (u each).
    u = torch.finfo(torch.float32).eps / 2
    assert torch.allclose(x, torch.tensor([0, 255, 0.]).div(255)[:, None, None].expand(3, 16, 16), rtol=0, atol=2 * u)
    # Test split: round-robin over classes, so a prefix is class-balanced.
    xs, ys = load_eval_tensors("imagefolder", 4, data_dir=root, input_size=16)
    assert ys.tolist() == [0, 1, 2, 0]
    assert torch.allclose(xs[:, :, 5, 5] * 255, torch.tensor([[10, 20, 30], [40, 50, 60], [70, 80, 90], [11, 20, 30.]]),
                          rtol=3 * u, atol=0)  # and the * 255 a third rounding, relative to the value
    assert find_data_root("imagefolder", root) == root


def test_imagefolder_errors(tmp_path):
    root = tmp_path / "imnet"
    _write_folder(root, {"cat": [(1, 2, 3)]}, "train")
    with pytest.raises(UserError, match=r"has no val/ or test/ folder for the test split"):
        load_dataset("imagefolder", "test", data_dir=root)
    _write_folder(root, {"cow": [(1, 2, 3)]}, "val")
    with pytest.raises(UserError, match=r"has classes not in .*train: cow"):
        load_dataset("imagefolder", "test", data_dir=root)
    (root / "train" / "cat" / "img0.png").write_bytes(b"garbage")
    ds = load_dataset("imagefolder", "train", data_dir=root)
    with pytest.raises(UserError, match=r"cannot read image .*img0.png"):
        ds[0]


# ----------------------------------------------------------------------------------- the real thing
def test_real_debian_fashion_mnist(monkeypatch):
    from robustscale.data import locations

    debian = Path("/usr/share/datasets/fashion-mnist")
    if not (debian / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    monkeypatch.setattr(locations, "SYSTEM_DIRS", {locations.DatasetName.FASHION_MNIST: [debian]})
    train = load_dataset("fashion_mnist", "train")
    test = load_dataset("fashion_mnist", "test")
    assert (len(train), len(test)) == (60000, 10000) and train.root == debian
    assert torch.bincount(test.targets).tolist() == [1000] * 10  # Fashion-MNIST is class-balanced
    assert train.classes[9] == "Ankle boot"
