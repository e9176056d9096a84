"""Run tiny linear algebra single-threaded.

The fits call BLAS on 3x3..5x5 problems thousands of times (scipy's L-BFGS-B, numpy's batched
matmul). OpenBLAS wakes its thread pool for them, and on a busy 2-core machine that makes a fit
10x slower. :func:`single_threaded_blas` sets every loaded OpenBLAS to one thread for the
duration of a block (what ``threadpoolctl`` does, for the OpenBLAS builds that numpy and scipy
wheels ship) and restores the previous setting. Where the libraries cannot be found it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import sys

import scipy.optimize  # noqa: F401  (loads scipy's own OpenBLAS, so that single_threaded_blas finds it too)

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "_64_", "", "_")
_by_path: dict[str, tuple | None] = {}


def _openblas_handles() -> list[tuple]:
    """``[(get_num_threads, set_num_threads)]`` for each OpenBLAS mapped into this process now."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []
    for path in paths:
        if path not in _by_path:
            _by_path[path] = _resolve(path)
    return [h for p in paths if (h := _by_path[p]) is not None]


def _resolve(path: str) -> tuple | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                set_.argtypes = [ctypes.c_int]
                return get, set_
    return None


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, every loaded OpenBLAS uses one thread."""
    saved = []
    for get, set_ in _openblas_handles():
        try:
            saved.append((set_, int(get())))
            set_(1)
        except (OSError, ValueError):  # pragma: no cover - exotic builds
            continue
    try:
        yield
    finally:
        for set_, n in saved:
            set_(n)
