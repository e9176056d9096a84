"""Approach 1 of Hoffmann et al. (2022), the cross-check of the joint law's allocation exponents:
the Pareto frontier of accuracy vs compute (best accuracy at or below each compute), then least
squares of log N and log D on log C over the frontier runs. The frontier is part of the estimator,
so it is recomputed in every bootstrap resample. A slope needs 3 distinct values of its input on
the frontier (the joint law's identification rule), else it is not identified.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .bootstrap import resample_counts
from .fit import percentile_interval
from .frontier import frontier_weights
from .joint import D_COL, MIN_DISTINCT, N_COL
from .laws import LAWS, Prepared


def frontier_allocation(compute, N, D, y, bootstrap: int = 0, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Approach 1: slopes of log N and log D on log C over the Pareto frontier of ``y`` vs ``compute``.

    All arrays ``(m,)`` over the runs (collapsed runs already excluded). Returns ``a`` and ``b``
    (None with ``a_reason`` / ``b_reason`` when the frontier has fewer than 3 distinct values of
    the input), their bootstrap intervals (the frontier recomputed per resample) and ``n_frontier``.
    """
    C, N, D, y = (np.asarray(v, float) for v in (compute, N, D, y))
    m = C.size
    on = frontier_weights(C, y, np.ones((1, m)))[0] > 0
    out: dict[str, Any] = {"n_runs": int(m), "n_frontier": int(on.sum()), "frontier_index": np.flatnonzero(on).tolist()}
    s = float(np.exp(np.mean(np.log(C)))) if m else 1.0
    W = frontier_weights(C, y, resample_counts(m, bootstrap, seed)) if bootstrap and m else None
    for name, col, x in (("a", N_COL, N), ("b", D_COL, D)):
        out[name], out[f"{name}_ci"], out[f"{name}_reason"] = None, None, None
        distinct = np.unique(x[on]).size
        if distinct < MIN_DISTINCT:
            out[f"{name}_reason"] = (f"the {int(on.sum())} frontier run(s) have {distinct} distinct {col}: "
                                     f"a slope needs at least {MIN_DISTINCT}")
            continue
        prep = Prepared(np.log(C / s)[:, None], np.log(x), np.array([s]))
        theta, _ = LAWS["power"].fit_batch(prep, on[None].astype(float))
        out[name] = float(theta[0, 1])
        if W is not None:
            th, ok = LAWS["power"].fit_batch(prep, W)
            slopes = th[ok, 1]
            out[f"{name}_share_defined"] = float(ok.mean())
            if slopes.size:
                lo, hi = percentile_interval(slopes, level)
                out[f"{name}_ci"] = (float(lo), float(hi))
    return out
