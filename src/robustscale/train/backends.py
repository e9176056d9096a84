"""Process-wide speed switches: cuDNN/TF32, determinism, autocast, and whether to ``torch.compile``."""
from __future__ import annotations

import contextlib
import os

import torch

from ..config import Amp, Compile, TrainConfig

__all__ = ["AUTO_COMPILE_MIN_TRAIN_FLOPS", "should_compile", "configure_backends", "enable_fast_kernels",
           "autocast", "amp_dtype"]

# `compile: auto` on CPU: eager below this many training FLOPs per rank. Compilation costs a fixed
# ~30 s (cold inductor cache, 2 cores) and then saves a share of every step, so the break-even is a
# FLOP count: measured 8.6k images x 4.65 GFLOP = 40 TFLOP for WRN-16-2 PGD-10 at 32x32, and 45k x
# 0.525 GFLOP = 24 TFLOP for WRN-16-1 PGD-5 at 28x28 (docs/benchmarks.md). Tests and the demo stay eager.
AUTO_COMPILE_MIN_TRAIN_FLOPS = 3e13


def have_cpp_compiler() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
        return True
    except Exception:  # inductor's CPU backend needs a C++ compiler; without one, stay eager
        return False


def should_compile(cfg: TrainConfig, device_type: str, train_flops: float | None = None) -> tuple[bool, str]:
    """Whether to ``torch.compile`` the model for ``cfg`` on ``device_type``, and why (one line).

    ``train_flops``: the training FLOPs this rank will execute (None: a steady-state measurement, as in
    ``robustscale bench``). ``auto`` compiles on CUDA always, and on the CPU when a C++ compiler exists
    and the run is long enough to repay the warm-up (``AUTO_COMPILE_MIN_TRAIN_FLOPS``).
    """
    if cfg.compile is Compile.ON:
        return True, "compile on"
    if cfg.compile is Compile.OFF:
        return False, "compile off"
    if device_type == "cuda":
        return True, "compile auto: compiled on CUDA"
    if device_type != "cpu":
        return False, f"compile auto: eager on {device_type}"
    if train_flops is not None and train_flops < AUTO_COMPILE_MIN_TRAIN_FLOPS:
        return False, (f"compile auto: eager, a short CPU run ({train_flops:.2g} training FLOPs < "
                       f"{AUTO_COMPILE_MIN_TRAIN_FLOPS:.0e} would not repay the compile warm-up)")
    if not have_cpp_compiler():
        return False, "compile auto: eager, no C++ compiler found for torch.compile on CPU"
    return True, "compile auto: compiled (long CPU run)"


def enable_fast_kernels(device) -> None:
    """On CUDA: cudnn.benchmark (fixed shapes: pick the fastest conv kernels once) and TF32."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def configure_backends(cfg: TrainConfig, device) -> None:
    """Deterministic algorithms when ``cfg.deterministic``, else the fast kernels."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        enable_fast_kernels(device)


def amp_dtype(amp: Amp):
    """The autocast dtype of ``amp`` (None: off)."""
    return {Amp.OFF: None, Amp.BF16: torch.bfloat16, Amp.FP16: torch.float16}[Amp(amp)]


def autocast(cfg: TrainConfig, device):
    """The autocast context of ``cfg.amp`` on ``device`` (a null context when off)."""
    dtype = amp_dtype(cfg.amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
