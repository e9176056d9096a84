"""Pareto frontier: the best ``y`` reached at or below each ``x`` (e.g. best robust accuracy per compute)."""
from __future__ import annotations

import numpy as np

from .io import require_columns


def frontier_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean ``(m,)``: run i is on the frontier iff no run with ``x <= x_i`` has ``y >= y_i`` (ties: first).

    NaNs are never on the frontier.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    W = np.isfinite(x) & np.isfinite(y)
    return frontier_weights(np.where(W, x, np.inf), np.where(W, y, -np.inf), W[None].astype(float))[0] > 0


def frontier_weights(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Per row of counts ``W (B, m)``: 1 for the runs drawn (count > 0) on that row's frontier, else 0.

    Runs are visited by increasing ``x`` (best ``y`` first among equal ``x``); a drawn run is on the
    frontier when its ``y`` beats every drawn run visited before it.
    """
    order = np.lexsort((-np.asarray(y, float), np.asarray(x, float)))
    ys = np.asarray(y, float)[order]
    drawn = W[:, order] > 0
    vals = np.where(drawn, ys[None, :], -np.inf)
    best_before = np.maximum.accumulate(np.concatenate([np.full((W.shape[0], 1), -np.inf), vals[:, :-1]], axis=1),
                                        axis=1)
    on = drawn & (vals > best_before)
    out = np.zeros(W.shape, dtype=float)
    out[:, order] = on
    return out


def pareto_frontier(df, x: str = "train_flops", y: str = "aa_robust_acc"):
    """The frontier runs of ``df`` (rows where ``y`` beats every run at lower or equal ``x``), sorted by ``x``.

    Rows with NaN ``x`` or ``y`` are ignored. Returns a copy of those rows.
    """
    require_columns(df, [x, y])
    mask = frontier_mask(df[x].to_numpy(float), df[y].to_numpy(float))
    return df.loc[mask].sort_values(x).copy()
