"""Peak memory of a benchmark window: RSS on the CPU, ``max_memory_allocated`` on CUDA, and a leak check."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform
from typing import Sequence

import torch

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

__all__ = ["read_rss", "reset_peak_memory", "peak_memory", "memory_growth", "MEMORY_GROWTH_LIMIT", "malloc_trim"]

# Peak memory from epoch 2 on may grow by at most this fraction before we call it a leak.
MEMORY_GROWTH_LIMIT = 0.05


def read_rss() -> tuple[int, int]:
    """``(current, peak)`` resident set size of this process in bytes (Linux /proc; else (0, ru_maxrss))."""
    try:
        values = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    values[key] = int(value.split()[0]) * 1024
        return values["VmRSS"], values["VmHWM"]
    except (OSError, KeyError, ValueError):
        if resource is None:  # pragma: no cover - Windows
            return 0, 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return 0, peak * (1 if platform.system() == "Darwin" else 1024)


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that RSS is live memory.

    Without it the RSS at the start of a window includes whatever the allocator kept from the
    previous path (e.g. the baseline's activations), and peak RSS wobbles by ~5% from round to
    round for reasons that have nothing to do with leaks.
    """
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


_LIBC = None


def reset_peak_memory(device) -> bool:
    """Start a new peak-memory window. CPU: returns freed heap memory to the OS (garbage
    collection, ``malloc_trim``), then writes 5 to /proc/self/clear_refs (resets VmHWM, Linux >=
    4.0); CUDA: ``torch.cuda.reset_peak_memory_stats``. False where impossible (the peak then
    stays the process-lifetime peak)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    gc.collect()
    malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(device) -> int:
    """Peak memory in bytes since :func:`reset_peak_memory`: RSS on CPU, max_memory_allocated on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return read_rss()[1]


def memory_growth(per_epoch: Sequence[int]) -> float | None:
    """Relative growth of peak memory from epoch 2 on: ``(max(m[1:]) - m[1]) / m[1]``.

    Epoch 1 is excluded (allocator pools and lazily built caches fill there); None with < 3 epochs.
    """
    if len(per_epoch) < 3 or not per_epoch[1]:
        return None
    return (max(per_epoch[1:]) - per_epoch[1]) / per_epoch[1]
