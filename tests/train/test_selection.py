"""Checkpoint selection: on the validation split carved from the training images, by the method's metric
(clean accuracy for standard training, PGD accuracy for adversarial training); `select: last`; test-set
selection only when asked, and then labelled."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustscale.config import TrainConfig
from robustscale.data import load_val_tensors
from robustscale.rundir import load_run
from robustscale.train import train

TINY = dict(dataset="fashion_mnist", model="wide_resnet10_1", train_subset=128, val_size=48, batch_size=32,
            epochs=3, eps=0.1, attack_steps=1, eval_attack_steps=2, workers=0, energy=False, progress=False,
            deterministic=True, lr_base=0.4, compile="off")


def _run(tmp_path: Path, data_dir: Path, name: str, **kw):
    cfg = TrainConfig.from_dict({**TINY, "data_dir": str(data_dir), "output_dir": str(tmp_path), "name": name, **kw})
    summary = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return cfg, tmp_path / name, summary, rows


def _first_argmax(rows, key):
    return max(rows, key=lambda r: (r[key], -r["epoch"]))["epoch"]


@pytest.mark.parametrize("method, metric", [("standard", "clean_acc"), ("pgd", "pgd_robust_acc")])
def test_best_on_validation_by_the_methods_metric(tmp_path, mnist_like_dir, method, metric):
    cfg, run, summary, rows = _run(tmp_path, mnist_like_dir, method, method=method)
    assert all(r["eval_split"] == "val" and r["eval_images"] == 48 for r in rows)
    chosen = _first_argmax(rows, metric)
    assert (summary["selected_epoch"], summary["selection_split"], summary["selection_metric"]) == \
        (chosen, "val", metric)
    _, model = load_run(run, "best")
    from safetensors import safe_open

    with safe_open(str(run / "best.safetensors"), framework="pt") as fh:
        assert fh.metadata()["epoch"] == str(chosen)
    # The selection's clean accuracy, recomputed independently on the validation images from the chosen weights.
    x, y = load_val_tensors(cfg)
    model = model.to(memory_format=torch.channels_last)  # as the per-epoch check ran it: the same arithmetic
    with torch.no_grad():
        acc = 100.0 * int((model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum()) / len(y)
    assert summary["val_clean_acc"] == pytest.approx(acc, abs=1e-9)
    assert summary["val_clean_acc_n_examples"] == 48
    # The run record's test accuracies stay empty: no test image was looked at.
    assert summary["clean_acc"] is None and summary["pgd_robust_acc"] is None


def test_select_last_and_explicit_test_selection(tmp_path, mnist_like_dir):
    _, run, summary, rows = _run(tmp_path, mnist_like_dir, "last", method="standard", select="last")
    assert not (run / "best.safetensors").exists() and summary["selected_epoch"] == 3
    assert summary["selection_split"] is None and summary["selection_metric"] == "last epoch"
    assert summary["val_clean_acc"] == rows[-1]["clean_acc"]
    _, _, summary, rows = _run(tmp_path, mnist_like_dir, "test", method="pgd", select_split="test", eval_subset=40)
    assert all(r["eval_split"] == "test" and r["eval_images"] == 40 for r in rows)
    assert summary["selection_split"] == "test" and summary["selected_epoch"] == _first_argmax(rows, "pgd_robust_acc")
    # labelled as test numbers, which they are
    assert summary["test_pgd_robust_acc_n_examples"] == 40 and summary["pgd_robust_acc"] == rows[-1]["pgd_robust_acc"]
