"""``robustscale datasets``: listing, describing one dataset, and the user-error exits."""
from __future__ import annotations

import json
import shutil


def test_list_table_and_json(cli, cifar10_dir):
    root, _ = cifar10_dir
    code, out, err = cli("datasets", "--data-dir", root, "--json")
    assert code == 0 and err == ""
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"cifar10", "cifar100", "fashion_mnist", "mnist", "imagefolder"}
    assert rows["cifar10"]["found"] and rows["cifar10"]["location"] == str(root / "cifar-10-batches-py")
    assert rows["cifar100"] == {**rows["cifar100"], "found": False, "location": None, "num_classes": 100,
                                "input_size": [3, 32, 32]}
    code, out, _ = cli("datasets", "--data-dir", root)
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["name", "classes", "shape"] and "train (images)" in header
    c10 = next(line for line in lines if line.startswith("cifar10 "))
    assert "3x32x32" in c10 and "50,000" in c10 and " yes " in c10


def test_describe_one_dataset(cli, cifar10_dir, mnist_dir):
    root, (_, train_y, _, test_y) = cifar10_dir
    code, out, err = cli("datasets", "cifar10", "--data-dir", root, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["splits"] == {"train": 20, "test": 6} and report["image_shape"] == [3, 32, 32]
    assert report["classes"][0] == "airplane" and report["num_classes"] == 10
    assert report["class_counts"]["test"] == [int((test_y == k).sum()) for k in range(10)]
    code, out, _ = cli("datasets", "mnist", "--data-dir", mnist_dir)
    assert code == 0
    assert "train (images)   64" in out and "test (images)    32" in out and "1x28x28" in out
    assert f"location         {mnist_dir}" in out


def _one_line_error(result, *fragments):
    code, out, err = result
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for f in fragments:
        assert f in err
    return err


def test_user_errors_exit_2(cli, tmp_path, mnist_dir):
    _one_line_error(cli("datasets", "svhn"), "unknown dataset 'svhn'", "valid: cifar10, cifar100")
    _one_line_error(cli("datasets", "cifar100", "--data-dir", tmp_path / "nowhere"),
                    "dataset cifar100 not found", str(tmp_path / "nowhere"), "--download")
    _one_line_error(cli("datasets", "--download"), "--download needs a dataset NAME")
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", mnist_dir / "t10k-images-idx3-ubyte.gz")
    _one_line_error(cli("datasets", "mnist", "--data-dir", mnist_dir),
                    "corrupt IDX file", "magic number 2049, expected 2051")
