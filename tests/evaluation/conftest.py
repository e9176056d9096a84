"""Fixtures for the evaluation tests: a tiny MLP trained in-test on learnable 12x12 images.

The MLP makes AutoAttack's thousands of forward passes cheap on CPU; one thread (tests/conftest.py)
avoids oversubscription on the 2-core CI machine (these ops are far too small to gain from threads).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

SIZE = 12


def learnable_tensors(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from robustscale.testing import learnable_images

    images, labels = learnable_images(n, size=SIZE, seed=seed)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255), torch.from_numpy(labels).long()


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="session")
def trained_mlp():
    """``(model, x_test (64,1,12,12), y_test (64,))``: ~100% clean accuracy after 60 Adam steps."""
    torch.manual_seed(0)
    x, y = learnable_tensors(512, seed=0)
    model = tiny_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, 512, (64,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x_test, y_test = learnable_tensors(64, seed=1)
    return model, x_test, y_test

