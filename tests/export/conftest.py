"""A real tiny run to export: WRN-16-1, one PGD epoch on 64 learnable Fashion-MNIST-format images."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY = dict(dataset="fashion_mnist", model="wide_resnet16_1", train_subset=64, batch_size=32, epochs=1, eps=0.1,
            attack_steps=1, eval_subset=32, eval_attack_steps=2, workers=0, energy=False, progress=False,
            deterministic=True, lr_base=0.4)


def train_tiny(out: Path, data_dir: Path, name: str, **kw) -> Path:
    from robustscale.config import TrainConfig
    from robustscale.train import train

    cfg = TrainConfig.from_dict({**TINY, "data_dir": str(data_dir), "output_dir": str(out), "name": name, **kw})
    train(cfg)
    return out / name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_like_dir) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs"), mnist_like_dir, "tiny")
