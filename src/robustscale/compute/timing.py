"""Timing a callable on a device: CUDA events on a GPU, ``perf_counter`` on the CPU."""
from __future__ import annotations

import time
from typing import Callable

import torch

__all__ = ["synchronize", "time_calls"]


def synchronize(device) -> None:
    """Wait for the device's queued kernels (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], n: int, device) -> float:
    """Seconds for ``n`` calls of ``fn()`` on ``device``."""
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0
