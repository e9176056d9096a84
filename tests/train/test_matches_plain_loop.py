"""`robustscale train` against the plain PyTorch loop written from a recipe's text (benchmarks/plain_loop.py).

Accuracies of two short runs are too noisy to compare, so the loops are compared where they must agree
exactly: the optimiser every parameter gets, the learning rate at every epoch boundary, and the loss of
the first step (same initial weights, same batch, same attack from a fixed start).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from robustscale.config import TrainConfig
from robustscale.train import train

REPO = Path(__file__).resolve().parents[2]
BASE = dict(dataset="fashion_mnist", model="wide_resnet10_1", train_subset=64, batch_size=64, epochs=1, eps=0.1,
            attack_steps=1, step_size_factor=2.5, random_start=False, label_smoothing=0.1, momentum=0.9,
            weight_decay=5e-4, lr_base=0.4, warmup_epochs=0, eval_subset=0, workers=0, energy=False,
            progress=False, deterministic=True, compile="off")
# Same weights, batch and attack; the losses differ only in how the label-smoothed cross-entropy is summed
# (timm's LabelSmoothingCrossEntropy vs F.cross_entropy): a few float32 ulps of a number near 2.
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def plain():
    spec = importlib.util.spec_from_file_location("plain_loop", REPO / "benchmarks" / "plain_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ours(tmp_path: Path, data_dir: Path, name: str, **kw):
    cfg = TrainConfig.from_dict({**BASE, "data_dir": str(data_dir), "output_dir": str(tmp_path), "name": name, **kw})
    train(cfg)
    run = tmp_path / name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return cfg, run, rows


def _recipe(plain, data_dir: Path, **kw) -> dict:
    return {**plain.recipe(str(REPO / "configs" / "cpu" / "fashion-mnist.yaml"), {}), **BASE,
            "data_dir": str(data_dir), "val_size": None, **kw}


@pytest.mark.parametrize("method", ["standard", "pgd"])
def test_first_step_loss_is_the_plain_loops(tmp_path, mnist_like_dir, plain, method):
    """Same init, same subset and augmented batch, same PGD step with BN in eval mode: the same loss."""
    _, _, rows = _ours(tmp_path, mnist_like_dir, method, method=method)
    losses: list[float] = []
    plain.train(_recipe(plain, mnist_like_dir, method=method), {"same_aug"}, log=open("/dev/null", "w"),
                losses=losses)
    assert rows[0]["train_loss"] == pytest.approx(losses[0], rel=LOSS_RTOL)


def test_optimizer_is_the_recipes_sgd(tmp_path, mnist_like_dir, plain):
    """`opt: sgd, momentum: 0.9, weight_decay: 5e-4`: classical momentum, weight decay on every parameter."""
    cfg, run, _ = _ours(tmp_path, mnist_like_dir, "opt", method="standard")
    groups = torch.load(run / "state.pt", weights_only=False)["optimizer"]["param_groups"]
    model = plain.build_model(_recipe(plain, mnist_like_dir), 1, 10)
    ref = plain.make_optimizer(model, _recipe(plain, mnist_like_dir), set())
    ours = sorted((g["weight_decay"], g["momentum"], g["nesterov"]) for g in groups for _ in g["params"])
    theirs = sorted((g["weight_decay"], g["momentum"], g["nesterov"]) for g in ref.param_groups for _ in g["params"])
    assert ours == theirs


def test_learning_rate_schedule_is_the_recipes(tmp_path, mnist_like_dir, plain):
    """Linear warm-up to the peak lr over warmup_epochs, then a per-step cosine to min_lr over the rest."""
    kw = dict(method="standard", batch_size=32, epochs=4, warmup_epochs=1)
    cfg, _, rows = _ours(tmp_path, mnist_like_dir, "lr", **kw)
    r = _recipe(plain, mnist_like_dir, **kw)
    steps = cfg.train_subset // cfg.batch_size
    total, warmup = cfg.epochs * steps, cfg.warmup_epochs * steps
    # metrics.jsonl's lr: the optimiser's lr after each epoch's last update, i.e. the lr of step (e+1)*steps
    expected = [plain.lr_at(r, (e + 1) * steps, total, warmup) if (e + 1) * steps < total else r["min_lr"]
                for e in range(cfg.epochs)]
    assert [row["lr"] for row in rows] == pytest.approx(expected, rel=1e-9, abs=1e-12)
