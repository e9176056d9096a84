"""The measured dense-kernel peak of a device (FLOP/s), the yardstick of model-FLOPs utilisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .timing import time_calls

__all__ = ["measure_peak_flops"]


def measure_peak_flops(device="cpu", dtype=None, n: int | None = None, iters: int | None = None,
                       trials: int = 3) -> dict:
    """Measured dense-kernel peak of ``device`` in FLOP/s (2 FLOPs per multiply-add).

    CUDA: ``n x n @ n x n`` matmuls (default bf16, n=8192, 10 timed after 3 warm-up, CUDA events),
    the figure model-FLOPs utilisation is usually quoted against.
    CPU: the best of a matmul (default n=2048) and a 3x3 channels-last convolution (64x256x16x16,
    256 filters: oneDNN, the library the model's convolutions run on), in ``dtype`` (default fp32),
    with all of torch's intra-op threads. Both count because on some CPUs one library is much
    faster than the other (MKL's fp32 GEMM reaches ~40% of what oneDNN does on AMD Zen).
    The best of ``trials`` timings is kept: a peak is a maximum, and load from other processes
    only ever slows a trial down.
    Returns ``{"peak_flops_per_second", "dtype", "kernel", "n", "iters", "trials"}``.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = int(n or (8192 if cuda else 2048))
    iters = int(iters or (10 if cuda else 5))
    trials = max(int(trials), 1)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def best(fn, flops_per_call):
        for _ in range(3 if cuda else 1):  # warm-up (kernel selection, caches)
            fn()
        seconds = min(time_calls(fn, iters, device) for _ in range(trials))
        return flops_per_call * iters / seconds

    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    candidates = {f"matmul {n}^3": best(lambda: torch.mm(a, b, out=out), 2.0 * n ** 3)}
    del a, b, out
    if not cuda:
        batch, chans, size = 64, 256, 16
        x = torch.randn(batch, chans, size, size, generator=gen).to(dtype=dtype)
        w = torch.randn(chans, chans, 3, 3, generator=gen).to(dtype=dtype)
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        candidates["conv3x3 channels-last"] = best(lambda: F.conv2d(x, w, padding=1),
                                                   2.0 * batch * size * size * chans * chans * 9)
    kernel = max(candidates, key=candidates.get)
    return {"peak_flops_per_second": candidates[kernel], "dtype": str(dtype).replace("torch.", ""),
            "kernel": kernel, "candidates": candidates, "n": n, "iters": iters, "trials": trials}
