"""Sweep tests: no store from the environment, and a private cache of measured step FLOPs."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_sweep_env(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("ROBUSTSCALE_STORE", raising=False)
    monkeypatch.delenv("ROBUSTSCALE_SWEEP", raising=False)
    cache = tmp_path_factory.getbasetemp() / "step-flops.json"
    monkeypatch.setenv("ROBUSTSCALE_FLOPS_CACHE", str(cache))
