"""Case-resampling bootstrap of a law fit, vectorised and parallel over cores.

A resample is a row of counts ``W (B, m)``: how often each of the ``m`` runs was drawn (a
multinomial draw of ``m`` cases). Refitting with counts as weights is the same as refitting on
the resampled table, and lets every resample share one copy of the data. All counts are drawn up
front from ``seed``, so the result does not depend on how the rows are split over processes.

For a frontier fit each resample's weights are its own Pareto frontier (recomputed per resample:
the frontier is part of the estimator, so its uncertainty belongs in the interval).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from tqdm import tqdm

from ._threads import single_threaded_blas
from .frontier import frontier_weights
from .laws import Law, PowerLaw, Prepared

MIN_PARALLEL_RESAMPLES = 200  # below this the process start-up costs more than it saves


def auto_jobs() -> int:
    """Cores not already busy (cores minus the 1-minute load average, at least 1).

    Worker processes only pay off on idle cores: on a loaded machine they compete with the other
    processes and with each other, and one process doing the whole vectorised batch is faster.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def resample_counts(m: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """``(n_resamples, m)`` float counts of a case-resampling bootstrap (each row sums to ``m``)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m, size=(n_resamples, m))
    offsets = (np.arange(n_resamples) * m)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=n_resamples * m).reshape(n_resamples, m).astype(float)


def _fit_chunk(law: Law, prep: Prepared, W: np.ndarray, theta0: np.ndarray, min_points: int, callback=None):
    """Fit one chunk of resamples: ``(theta (b, p) with NaN rows for failures, extra (b,) or None)``."""
    with single_threaded_blas():
        return _fit_chunk_inner(law, prep, W, theta0, min_points, callback)


def _fit_chunk_inner(law: Law, prep: Prepared, W: np.ndarray, theta0: np.ndarray, min_points: int, callback):
    distinct_x = np.array([np.unique(prep.Z[w > 0], axis=0).shape[0] for w in W])
    usable = ((W > 0).sum(axis=1) >= min_points) & (distinct_x >= 2)
    theta = np.full((W.shape[0], law.n_params), np.nan)
    if callback is not None and (~usable).any():
        callback(int((~usable).sum()))
    if usable.any():
        th, ok = law.fit_batch(prep, W[usable], theta0, callback=callback)
        th[~ok] = np.nan
        theta[usable] = th
    extra = law.extra(prep, W)
    return theta, extra


def bootstrap_fit(law: Law, prep: Prepared, theta0: np.ndarray, n_resamples: int, seed: int = 0,
                  frontier_y: np.ndarray | None = None, x_for_frontier: np.ndarray | None = None,
                  n_jobs: int | None = None, progress: bool = False, desc: str = "bootstrap"
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Refit ``law`` on ``n_resamples`` case resamples of ``prep``.

    Args:
        theta0: the full-data estimate ``(p,)``, the warm start of every refit.
        frontier_y / x_for_frontier: when given, each resample is reduced to its Pareto frontier
            (best ``y`` at or below each ``x``) before fitting.
        n_jobs: worker processes (default :func:`auto_jobs`); 1 runs in this process.
    Returns:
        ``theta (B, p)`` (NaN rows: resamples too small to fit) and the law's per-resample extra.
    """
    m = prep.Z.shape[0]
    W = resample_counts(m, n_resamples, seed)
    if frontier_y is not None:
        W = frontier_weights(x_for_frontier, frontier_y, W)
    min_points = law.n_params + 1
    n_jobs = n_jobs or auto_jobs()
    iterative = not isinstance(law, PowerLaw)  # closed forms (power, error-power): one batch
    bar = None
    if progress:
        bar = tqdm(total=n_resamples, desc=desc, unit="fit", leave=False, dynamic_ncols=True)
    parallel = (iterative and n_jobs > 1 and n_resamples >= MIN_PARALLEL_RESAMPLES
                # fork: workers inherit the imported modules (spawn would re-import torch through the
                # package, seconds per worker) and run only numpy code; fork is safe on Linux only.
                and sys.platform.startswith("linux") and not mp.current_process().daemon)
    try:
        parts = None
        if parallel:
            # One chunk per worker: a batch runs as long as its slowest resample, so more, smaller
            # chunks would only repeat that tail.
            bounds = np.linspace(0, n_resamples, min(n_jobs, n_resamples) + 1).astype(int)
            try:
                with ProcessPoolExecutor(max_workers=len(bounds) - 1, mp_context=mp.get_context("fork")) as pool:
                    futures = [pool.submit(_fit_chunk, law, prep, W[a:b], theta0, min_points)
                               for a, b in zip(bounds[:-1], bounds[1:])]
                    parts = []
                    for (a, b), fut in zip(zip(bounds[:-1], bounds[1:]), futures):
                        parts.append(fut.result())
                        if bar is not None:
                            bar.update(int(b - a))
            except (OSError, BrokenProcessPool):  # no processes to be had: do it here
                parts = None
                if bar is not None:
                    bar.reset()
        if parts is None:
            parts = [_fit_chunk(law, prep, W, theta0, min_points, callback=bar.update if bar is not None else None)]
    finally:
        if bar is not None:
            bar.close()
    theta = np.concatenate([p[0] for p in parts], axis=0)
    extras = [p[1] for p in parts]
    extra = None if extras[0] is None else np.concatenate(extras)
    return theta, extra
