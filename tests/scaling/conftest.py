"""Synthetic runs drawn from known laws (the truth the fits must recover)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# saturating truth: error = E + A x^-alpha, x in FLOPs
SAT = {"A": 30 * 1e17 ** 0.3, "alpha": 0.3, "E": 30.0}
# power truth: y = C x^alpha
POW = {"C": 2e-3, "alpha": 0.25}
# chinchilla truth: error = E + A/N^alpha + B/D^beta, compute C = 6 N D
CHIN = {"A": 12 * 1e7 ** 0.35, "alpha": 0.35, "B": 15 * 1e8 ** 0.3, "beta": 0.3, "E": 15.0}


def make_runs(law: str, n: int = 60, noise: float = 0.02, seed: int = 0, **truth) -> pd.DataFrame:
    """Runs in the run schema whose y follows ``law`` with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    if law == "chinchilla":
        p = {**CHIN, **truth}
        side = int(np.ceil(np.sqrt(n)))
        N, D = np.meshgrid(np.logspace(6, 9, side), np.logspace(7, 10, side))
        N, D = N.ravel()[:n], D.ravel()[:n]
        err = (p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]) * np.exp(noise * rng.standard_normal(n))
        flops = 6.0 * N * D
        return pd.DataFrame({"name": [f"run{i}" for i in range(n)], "model_parameters": N, "train_images_seen": D,
                             "train_flops": flops, "aa_robust_acc": 100 - err})
    x = np.logspace(17, 20, n) * np.exp(0.1 * rng.standard_normal(n))
    if law == "saturating":
        p = {**SAT, **truth}
        y = 100 - (p["E"] + p["A"] * x ** -p["alpha"]) * np.exp(noise * rng.standard_normal(n))
    else:
        p = {**POW, **truth}
        y = p["C"] * x ** p["alpha"] * np.exp(noise * rng.standard_normal(n))
    return pd.DataFrame({"name": [f"run{i}" for i in range(n)], "train_flops": x, "aa_robust_acc": y,
                         "device_hours": x / 1e15 / 3600, "train_flops_per_image": np.full(n, 1e12)})


@pytest.fixture
def runs():
    return make_runs


@pytest.fixture
def truth():
    return {"saturating": SAT, "power": POW, "chinchilla": CHIN}
