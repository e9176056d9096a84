"""Binomial confidence intervals of accuracies: the one home of the Wilson score interval (training's
per-epoch check, evaluation claims and studies all use it).

An accuracy measured on ``n`` images is ``correct / n``; its Wilson interval (Wilson 1927) keeps
its coverage near the nominal level also close to 0 % and 100 % and for small ``n``, where the
normal-approximation interval collapses to a point or leaves [0, 100]. Accuracies are percentages.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["wilson_interval", "accuracy_interval", "correct_count", "with_interval", "accuracy_intervals"]


def _z(level: float) -> float:
    from scipy.stats import norm

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(norm.ppf(0.5 + level / 2))


def wilson_interval(correct, n, level: float = 0.95):
    """Wilson score interval of ``correct / n`` as percentages ``(low, high)`` in [0, 100].

    ``correct`` and ``n`` are counts (scalars or arrays of one shape); ``n == 0`` gives NaNs.
    Raises ValueError for a negative count or ``correct > n``.
    """
    k = np.asarray(correct, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(m < 0) or np.any(k > m):
        raise ValueError(f"need 0 <= correct <= n, got correct={correct!r}, n={n!r}")
    z2 = _z(level) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m
        denom = 1 + z2 / m
        centre = (p + z2 / (2 * m)) / denom
        half = math.sqrt(z2) / denom * np.sqrt(p * (1 - p) / m + z2 / (4 * m * m))
        # The interval contains p exactly (rounding could put an end a hair inside at p = 0 or 1).
        low = np.minimum(np.clip(centre - half, 0.0, 1.0), p) * 100
        high = np.maximum(np.clip(centre + half, 0.0, 1.0), p) * 100
    low = np.where(m > 0, low, np.nan)
    high = np.where(m > 0, high, np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def correct_count(acc_percent: float, n: int) -> int:
    """The count behind an accuracy ``acc_percent`` measured on ``n`` images (rounded: stored accuracies
    are ``100 * correct / n`` in floating point)."""
    return int(round(float(acc_percent) * int(n) / 100.0))


def accuracy_interval(acc_percent, n, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson interval of an accuracy given as a percentage on ``n`` images; None when either is missing."""
    if acc_percent is None or n is None or not math.isfinite(float(acc_percent)) or int(n) <= 0:
        return None
    return wilson_interval(correct_count(acc_percent, n), int(n), level)


def with_interval(record: Mapping[str, Any], metric: str, n: int | None, level: float = 0.95) -> dict[str, Any]:
    """``{metric: acc, metric_n_examples: n, metric_ci: [low, high]}`` for ``record[metric]`` (None when absent)."""
    acc = record.get(metric)
    ci = accuracy_interval(acc, n, level)
    return {metric: acc, f"{metric}_n_examples": int(n) if n is not None and acc is not None else None,
            f"{metric}_ci": list(ci) if ci is not None else None}


def accuracy_intervals(claim: Mapping[str, Any], n: int | None) -> dict[str, Any]:
    """``<metric>_n_examples`` and ``<metric>_ci`` (Wilson 95 %, percent) of a claim's accuracies (an evaluation
    claim or a store's evaluation row)."""
    out: dict[str, Any] = {}
    for metric in ("clean_acc", "robust_acc", "autoattack_acc"):
        if metric in claim:
            out.update({k: v for k, v in with_interval(claim, metric, n).items() if k != metric})
    return out
