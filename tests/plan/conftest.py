"""Runs drawn from a planted joint law (the truth the planner must recover)."""
from __future__ import annotations

import numpy as np
import pandas as pd

# error = E + A N^-alpha + B D^-beta + G k^-gamma (percent)
TRUTH = {"E": 15.0, "A": 12 * 1e7 ** 0.35, "alpha": 0.35, "B": 15 * 1e8 ** 0.3, "beta": 0.3, "G": 8.0, "gamma": 0.8}


def true_error(N, D, k, t=TRUTH):
    N, D, k = (np.asarray(v, float) for v in (N, D, k))
    return t["E"] + t["A"] * N ** -t["alpha"] + t["B"] * D ** -t["beta"] + t["G"] * k ** -t["gamma"]


def grid_runs(N, D, k, noise=0.01, seed=0, truth=TRUTH, **cols) -> pd.DataFrame:
    """Every combination of N, D, k with log-normal noise on the error."""
    rng = np.random.default_rng(seed)
    n, d, kk = (a.ravel() for a in np.meshgrid(N, D, k, indexing="ij"))
    err = true_error(n, d, kk, truth) * np.exp(noise * rng.standard_normal(n.size))
    df = pd.DataFrame({"name": [f"run{i}" for i in range(n.size)], "model_parameters": n, "train_images_seen": d,
                       "attack_steps": kk.astype(int), "aa_robust_acc": 100 - err})
    for c, v in cols.items():
        df[c] = v(df) if callable(v) else v
    return df
