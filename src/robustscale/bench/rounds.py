"""Timing rounds: every path for some epochs of steps, the order rotating, so that load hits all alike."""
from __future__ import annotations

import gc
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from tqdm import tqdm

from ..compute.timing import synchronize, time_calls
from .memory import malloc_trim, peak_memory, read_rss, reset_peak_memory
from .steps import StepFn

__all__ = ["run_rounds", "profile_step"]


def _time_steps(step: StepFn, x, y, n: int, device) -> float:
    """Seconds for ``n`` calls of ``step(x, y)``."""
    return time_calls(lambda: step(x, y), n, device)


def run_rounds(paths: dict[str, StepFn], x, y, steps: int, epochs: int, device="cpu", warmup: int = 1,
               progress: bool = False) -> dict[str, dict]:
    """Time every path for ``epochs`` rounds of ``steps`` steps, alternating paths within a round.

    Each path first runs ``warmup`` untimed steps (compilation, allocator and cache warm-up; the
    seconds are reported as ``warmup_seconds``). Then in round r the paths run one after the
    other in an order rotated by r, so that slow drifts and bursts of machine load spread over
    all paths. Peak memory is taken per (path, round).
    Returns ``{name: {"seconds": [...], "cpu_seconds": [...], "images_per_second": [...],
    "peak_memory_bytes": [...], "rss_bytes": [...] (live RSS at the end of the epoch, after
    ``malloc_trim`` on the CPU), "warmup_seconds": float}}`` with one entry per
    round (``cpu_seconds``: this process's CPU time, all threads; less sensitive than wall time to
    other processes competing for the cores, as long as they do not make our threads spin).
    """
    names = list(paths)
    batch = int(x.shape[0])
    results = {name: {"seconds": [], "cpu_seconds": [], "images_per_second": [], "peak_memory_bytes": [],
                      "rss_bytes": [], "warmup_seconds": 0.0} for name in names}
    for name in names:
        results[name]["warmup_seconds"] = _time_steps(paths[name], x, y, warmup, device) if warmup else 0.0
    bar = tqdm(total=epochs * steps * len(names) * batch, unit="img", unit_scale=True, disable=not progress,
               desc="bench", leave=False)
    try:
        for r in range(epochs):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                reset_peak_memory(device)
                cpu0 = time.process_time()
                seconds = _time_steps(paths[name], x, y, steps, device)
                res = results[name]
                res["seconds"].append(seconds)
                res["cpu_seconds"].append(time.process_time() - cpu0)
                res["images_per_second"].append(steps * batch / seconds)
                res["peak_memory_bytes"].append(peak_memory(device))
                if torch.device(device).type == "cpu":  # live memory: after returning freed memory to the OS
                    gc.collect()
                    malloc_trim()
                res["rss_bytes"].append(read_rss()[0])
                bar.update(steps * batch)
                bar.set_postfix({n: f"{statistics.median(results[n]['images_per_second']):.1f} img/s"
                                 for n in names if results[n]["images_per_second"]})
    finally:
        bar.close()
    return results


def profile_step(step: StepFn, x, y, steps: int = 1, row_limit: int = 15, device="cpu") -> str:
    """torch.profiler table of the top ops (by self time) over ``steps`` calls of ``step(x, y)``."""
    activities = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(x, y)
        synchronize(device)
    sort = "self_cuda_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=row_limit)
