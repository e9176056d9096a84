"""Throughput of the adversarial training step: ours against the way common public code does it.

Adversarial training with a K-step attack costs K+1 forward-backward passes per step. Two
step implementations are timed here on the same synthetic batch (data loading excluded):

- :class:`OursStep`: what ``robustscale train`` runs. The task of ``robustscale.tasks`` crafts
  the attack with input-only gradients (``torch.autograd.grad`` w.r.t. the perturbation,
  parameters' ``requires_grad`` off: no weight-gradient kernels), runs no logging forward, and
  honours ``amp`` / ``channels_last`` / ``compile`` of the config.
- :class:`BaselineStep`: PGD-AT as widespread public code writes it (e.g. the ``attack_pgd`` of
  Rice et al. 2020, ``train_cifar.py``): every attack step calls ``loss.backward()`` so that
  weight gradients are computed and thrown away, an extra clean forward is spent on logging
  clean accuracy, fp32, NCHW, eager.

Both draw the same random start from the same generator and apply the same projected
sign-gradient update, so given the same weights and seed they produce the same adversarial
examples (see ``tests/bench``); only the cost differs.

:func:`bench_train_step` times them in alternating rounds (one "epoch" of ``steps`` steps per
path per round, the order rotating every round), so that machine noise hits both alike and the
median of the per-round ratios ours/baseline is a robust speed-up figure. It also reports
measured FLOPs per image (``robustscale.compute.measure_step_flops`` for ours,
``FlopCounterMode`` on the baseline step), achieved FLOP/s, utilisation against the device's
measured dense-kernel peak (:func:`measure_peak_flops`), and peak memory per epoch (peak RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU) with a leak check.
"""
from __future__ import annotations

import copy
import platform
import statistics
import time
from typing import Any, Callable, Sequence

from .config import Amp, Method, Norm, TrainConfig
from .errors import UserError

__all__ = ["OursStep", "BaselineStep", "BASELINE_METHODS", "bench_train_step", "run_rounds", "measure_peak_flops",
           "count_step_flops", "profile_step", "format_result", "read_rss", "reset_peak_memory", "peak_memory",
           "memory_growth", "MEMORY_GROWTH_LIMIT"]

# Methods the baseline implements (FGSM-RS is one-step PGD from a random start).
BASELINE_METHODS = (Method.PGD, Method.FGSM_RS)
# Peak memory from epoch 2 on may grow by at most this fraction before we call it a leak.
MEMORY_GROWTH_LIMIT = 0.05

StepFn = Callable[[Any, Any], dict]


def _amp_dtype(amp: Amp):
    import torch

    return {Amp.OFF: None, Amp.BF16: torch.bfloat16, Amp.FP16: torch.float16}[Amp(amp)]


# ---------------------------------------------------------------------- the two step implementations
class OursStep:
    """One robustscale training step: ``task(x, y)``, backward, optimizer step.

    Args:
        cfg: the run config (method, attack, ``amp``, ``channels_last``, ``compile``, optimiser).
        model: classifier taking [0,1] pixels; moved to ``device`` (and to channels-last memory
            format when ``cfg.channels_last``) in place.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        generator: RNG of the attacks' random starts (on ``device`` or the CPU).
    Call: ``step(x, y)`` with x (N, C, H, W) in [0,1], y (N,) int64 -> the task's output dict
    (``loss``, ``output``, ``x_adv``, ...).
    """

    name = "ours"

    def __init__(self, cfg: TrainConfig, model, device="cpu", generator=None):
        import torch
        from timm.optim import create_optimizer_v2

        from .tasks import create_task

        self.cfg = cfg
        self.device = torch.device(device)
        self.channels_last = bool(cfg.channels_last)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                             momentum=cfg.momentum)
        self.task = create_task(cfg, model, generator=generator)
        from .train import should_compile

        # train_flops=None: a steady-state measurement, i.e. what a long run gets (`compile: auto` compiles those).
        self.compiled, self.compile_reason = should_compile(cfg, self.device.type, train_flops=None)
        if self.compiled:
            self.task.compile()
        self.amp_dtype = _amp_dtype(cfg.amp)
        # fp16 needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.amp is Amp.FP16 else None

    def __call__(self, x, y) -> dict:
        import torch

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            out = self.task(x, y)
        else:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                out = self.task(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(out["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out["loss"].backward()
            self.optimizer.step()
        return out


class BaselineStep:
    """PGD adversarial training the way common public code writes it (the reference point).

    Modelled on ``attack_pgd`` + the training loop of Rice et al. 2020 (``train_cifar.py``),
    which many later repositories copied:

    - each attack step runs ``loss.backward()``: autograd computes the gradient of every weight
      (then discarded by ``optimizer.zero_grad()``) besides the input gradient the attack uses;
    - an extra clean forward (no grad, attack mode) computes clean accuracy for the logs;
    - fp32, NCHW memory format, eager (no compile), mean-reduced cross-entropy.

    The attack is crafted in eval mode when ``cfg.attack_bn_eval`` (as Madry's and TRADES'
    code do), like ours. The random start is drawn with ``robustscale.attacks.uniform_start``
    from ``generator``, so both implementations start from the same point.
    Call: ``step(x, y)`` -> dict with ``loss``, ``output``, ``x_adv``, ``clean_output``.
    """

    name = "baseline"

    def __init__(self, cfg: TrainConfig, model, device="cpu", generator=None):
        import torch

        if cfg.method not in BASELINE_METHODS:
            raise UserError(f"--baseline implements {', '.join(m.value for m in BASELINE_METHODS)} only, "
                            f"not method {cfg.method.value!r}; valid with --baseline: "
                            f"{', '.join(m.value for m in BASELINE_METHODS)}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.attack = cfg.attack_config()
        self.generator = generator
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)

    def attack_pgd(self, x, y):
        """l-inf / l2 PGD with ``loss.backward()`` in every step. Returns x_adv (N, C, H, W), detached."""
        import torch
        import torch.nn.functional as F

        from .attacks import uniform_start

        a, model = self.attack, self.model
        eps, alpha, norm = a.eps, a.step_size, Norm(a.norm).value
        lower, upper = -x, 1 - x  # x + delta stays in [0, 1]
        if a.random_start:
            delta = uniform_start(x, eps, norm, self.generator)
        else:
            delta = torch.zeros_like(x)
        delta = torch.max(torch.min(delta, upper), lower)
        delta.requires_grad = True
        for _ in range(a.steps):
            loss = F.cross_entropy(model(x + delta), y)
            loss.backward()  # the waste: fills every parameter's .grad too
            g = delta.grad.detach()
            d = delta.data
            if norm == "linf":
                d = torch.clamp(d + alpha * torch.sign(g), min=-eps, max=eps)
            else:
                g_norm = g.flatten(1).norm(p=2, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                d = d + alpha * g / g_norm
                d = d * (eps / d.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)).clamp(max=1.0).view(-1, 1, 1, 1)
            delta.data = torch.max(torch.min(d, upper), lower)
            delta.grad.zero_()
        return torch.clamp(x + delta.detach(), 0, 1)

    def __call__(self, x, y) -> dict:
        import torch
        import torch.nn.functional as F

        model = self.model
        if self.cfg.attack_bn_eval:
            model.eval()
        with torch.no_grad():  # the logging forward: clean accuracy of the batch
            clean_output = model(x)
        x_adv = self.attack_pgd(x, y)
        model.train()
        output = model(x_adv)
        loss = F.cross_entropy(output, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss, "output": output, "x_adv": x_adv, "clean_output": clean_output}


# ---------------------------------------------------------------------- memory, timing, peak
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
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return 0, peak * (1 if platform.system() == "Darwin" else 1024)


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that RSS is live memory.

    Without it the RSS at the start of a window includes whatever the allocator kept from the
    previous path (e.g. the baseline's activations), and peak RSS wobbles by ~5% from round to
    round for reasons that have nothing to do with leaks.
    """
    import ctypes
    import ctypes.util

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
    import gc

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    gc.collect()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(device) -> int:
    """Peak memory in bytes since :func:`reset_peak_memory`: RSS on CPU, max_memory_allocated on CUDA."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return read_rss()[1]


def _synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step: StepFn, x, y, n: int, device) -> float:
    """Seconds for ``n`` calls of ``step(x, y)``: CUDA events on a GPU, perf_counter on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _synchronize(device)
        start.record()
        for _ in range(n):
            step(x, y)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    for _ in range(n):
        step(x, y)
    return time.perf_counter() - t0


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
    import torch
    import torch.nn.functional as F

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
        seconds = min(_time_steps(lambda *_: fn(), None, None, iters, device) for _ in range(trials))
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


def count_step_flops(step_factory: Callable[[], StepFn], input_size: Sequence[int], num_classes: int,
                     batch_size: int = 2) -> float:
    """FLOPs per image (2 x MACs, FlopCounterMode) of one call of the step ``step_factory()`` builds,
    on a random CPU batch of ``batch_size``."""
    import torch

    from .compute import count_flops

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        step = step_factory()
        x = torch.rand(batch_size, *input_size)
        y = torch.randint(0, num_classes, (batch_size,))
        return count_flops(lambda: step(x, y)) / batch_size


# ---------------------------------------------------------------------- rounds
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
    import gc

    import torch
    from tqdm import tqdm

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
                    _malloc_trim()
                res["rss_bytes"].append(read_rss()[0])
                bar.update(steps * batch)
                bar.set_postfix({n: f"{statistics.median(results[n]['images_per_second']):.1f} img/s"
                                 for n in names if results[n]["images_per_second"]})
    finally:
        bar.close()
    return results


def memory_growth(per_epoch: Sequence[int]) -> float | None:
    """Relative growth of peak memory from epoch 2 on: ``(max(m[1:]) - m[1]) / m[1]``.

    Epoch 1 is excluded (allocator pools and lazily built caches fill there); None with < 3 epochs.
    """
    if len(per_epoch) < 3 or not per_epoch[1]:
        return None
    return (max(per_epoch[1:]) - per_epoch[1]) / per_epoch[1]


# ---------------------------------------------------------------------- the benchmark
def _check_device(device: str):
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available here; valid: cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r} does not exist; valid: cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return dev


def bench_train_step(cfg: TrainConfig, device: str = "cpu", steps: int = 3, warmup: int = 1, epochs: int = 3,
                     baseline: bool = False, seed: int = 0, peak: bool = True, progress: bool = False) -> dict:
    """Benchmark one adversarial training step of ``cfg`` (and optionally the baseline) on ``device``.

    Args:
        cfg: model, dataset (input size, classes), method, attack_steps, batch_size, amp,
            channels_last, compile of the step to time.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        steps: timed steps per path per epoch (round). warmup: untimed steps per path first.
        epochs: rounds; with ``baseline`` each runs ours and the baseline, order alternating.
        baseline: also time :class:`BaselineStep` and report the per-round ratios.
        seed: model initialisation, synthetic batch and attack random starts.
        peak: measure the device's dense-kernel peak (for utilisation).
    Returns a JSON-able dict (see ``docs/benchmarks.md``): per path ``images_per_second``
    (median over epochs), ``flops_per_image``, ``achieved_flops_per_second``, ``mfu``,
    ``peak_memory_bytes`` (max over epochs) and per-epoch lists; ``ratio`` (median of per-round
    ours/baseline img/s) and ``ratio_rounds``; ``memory_growth`` / ``memory_flat`` for ours.
    """
    import timm
    import torch

    from . import __version__
    from .compute import detect_device, measure_step_flops
    from .data.info import dataset_info
    from .models import create_model

    dev = _check_device(device)
    if dev.type == "cuda" and not cfg.deterministic:
        # As robustscale.train does (fixed shapes: pick the fastest kernels once); affects both paths.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    for key, value, low in (("steps", steps, 1), ("epochs", epochs, 1), ("warmup", warmup, 0),
                            ("batch_size", cfg.batch_size, 1)):
        if int(value) < low:
            raise UserError(f"invalid {key.replace('_', '-')} {value!r}: must be >= {low}")
    if cfg.amp is Amp.FP16 and dev.type != "cuda":
        raise UserError("invalid amp 'fp16' on the CPU; valid there: off, bf16")
    if baseline and cfg.method not in BASELINE_METHODS:
        raise UserError(f"--baseline implements PGD-AT only; invalid method {cfg.method.value!r} with --baseline; "
                        f"valid: {', '.join(m.value for m in BASELINE_METHODS)}")
    info = dataset_info(cfg.dataset)
    input_size = tuple(info.input_size)
    num_classes = info.num_classes or 1000

    torch.manual_seed(seed)
    model = create_model(cfg.model, num_classes=num_classes, in_chans=input_size[0], dataset=info.name.value)
    base_model = copy.deepcopy(model) if baseline else None  # same initial weights for both paths
    flops_model = copy.deepcopy(model)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(cfg.batch_size, *input_size, generator=gen).to(dev)
    y = torch.randint(0, num_classes, (cfg.batch_size,), generator=gen).to(dev)

    def attack_generator():
        return torch.Generator(device=dev).manual_seed(seed + 1)

    paths: dict[str, StepFn] = {"ours": OursStep(cfg, model, dev, generator=attack_generator())}
    if baseline:
        paths["baseline"] = BaselineStep(cfg, base_model, dev, generator=attack_generator())

    flops = {"ours": measure_step_flops(flops_model, cfg, input_size).train_step_flops}
    if baseline:
        flops["baseline"] = count_step_flops(
            lambda: BaselineStep(cfg, copy.deepcopy(flops_model), "cpu"), input_size, num_classes)

    # GPU: against the bf16 tensor-core peak (the usual MFU convention); CPU: in the run's precision.
    probe_dtype = torch.bfloat16 if dev.type == "cuda" else (_amp_dtype(cfg.amp) or torch.float32)
    peak_info = measure_peak_flops(dev, dtype=probe_dtype) if peak else None
    timings = run_rounds(paths, x, y, steps, epochs, dev, warmup=warmup, progress=progress)

    kind, device_name = detect_device(dev)
    result: dict[str, Any] = {
        "model": cfg.model, "dataset": info.name.value, "input_size": list(input_size), "method": cfg.method.value,
        "attack_steps": paths["ours"].task.attack.steps if hasattr(paths["ours"].task, "attack") else 0,
        "batch_size": cfg.batch_size, "device": kind, "device_name": device_name,
        "threads": torch.get_num_threads() if kind == "cpu" else None,
        "amp": cfg.amp.value, "channels_last": bool(cfg.channels_last), "compile": paths["ours"].compiled,
        "compile_reason": paths["ours"].compile_reason,
        "steps": steps, "warmup": warmup, "epochs": epochs, "seed": seed,
        "memory_kind": "cuda_max_memory_allocated" if kind == "cuda" else "peak_rss",
        "peak_flops_per_second": peak_info["peak_flops_per_second"] if peak_info else None,
        "peak_flops_dtype": peak_info["dtype"] if peak_info else None,
        "peak_flops_kernel": peak_info["kernel"] if peak_info else None,
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "robustscale": __version__,
                     "python": platform.python_version()},
    }
    for name, res in timings.items():
        ips = statistics.median(res["images_per_second"])
        achieved = ips * flops[name]
        result[name] = {
            "images_per_second": ips,
            "flops_per_image": flops[name],
            "achieved_flops_per_second": achieved,
            "mfu": achieved / peak_info["peak_flops_per_second"] if peak_info else None,
            "peak_memory_bytes": max(res["peak_memory_bytes"]),
            "warmup_seconds": res["warmup_seconds"],
            "images_per_second_best": max(res["images_per_second"]),
            "images_per_second_epochs": res["images_per_second"],
            "cpu_seconds_epochs": res["cpu_seconds"],
            "peak_memory_bytes_epochs": res["peak_memory_bytes"],
            "rss_bytes_epochs": res["rss_bytes"],
        }
    growth = memory_growth(result["ours"]["peak_memory_bytes_epochs"])
    result["memory_growth"] = growth
    result["memory_flat"] = None if growth is None else bool(growth < MEMORY_GROWTH_LIMIT)
    if baseline:
        rounds = [o / b for o, b in zip(timings["ours"]["images_per_second"], timings["baseline"]["images_per_second"])]
        result["ratio_rounds"] = rounds
        result["ratio"] = statistics.median(rounds)
        # Two load-robust cross-checks: best epoch of each (load only ever slows an epoch down) and
        # images per CPU-second of this process.
        result["ratio_best"] = result["ours"]["images_per_second_best"] / result["baseline"]["images_per_second_best"]
        result["ratio_cpu_time"] = (sum(timings["baseline"]["cpu_seconds"]) / sum(timings["ours"]["cpu_seconds"])
                                    if sum(timings["ours"]["cpu_seconds"]) > 0 else None)
    else:
        result["baseline"] = result["ratio"] = result["ratio_rounds"] = None
        result["ratio_best"] = result["ratio_cpu_time"] = None
    return result


# ---------------------------------------------------------------------- output
def format_result(r: dict) -> str:
    """The result of :func:`bench_train_step` as a table for people."""
    mib = 2 ** 20
    precision = r["amp"] if r["amp"] != "off" else "fp32"
    where = f"{r['device']} ({r['device_name']}" + (f", {r['threads']} threads)" if r.get("threads") else ")")
    lines = [f"{r['model']} {r['method']}-{r['attack_steps']}, batch {r['batch_size']}, "
             f"{'x'.join(map(str, r['input_size']))}, {where}",
             f"ours: {precision}, {'channels-last' if r['channels_last'] else 'NCHW'}, "
             f"{'compiled' if r['compile'] else 'eager'}; {r['epochs']} epochs x {r['steps']} steps "
             f"after {r['warmup']} warm-up"]
    if r.get("peak_flops_per_second"):
        lines.append(f"device peak ({r['peak_flops_dtype']} {r['peak_flops_kernel']}): "
                     f"{r['peak_flops_per_second'] / 1e12:.3f} TFLOP/s")
    mem = "peak RSS (MiB)" if r["memory_kind"] == "peak_rss" else "peak alloc (MiB)"
    header = f"{'path':<9} {'img/s':>9} {'GFLOPs/img':>11} {'GFLOP/s':>9} {'MFU %':>6} {mem:>17} {'warm-up s':>10}"
    lines += ["", header]
    for name in ("ours", "baseline"):
        p = r.get(name)
        if not p:
            continue
        mfu = f"{100 * p['mfu']:.1f}" if p.get("mfu") is not None else "-"
        lines.append(f"{name:<9} {p['images_per_second']:>9.2f} {p['flops_per_image'] / 1e9:>11.3f} "
                     f"{p['achieved_flops_per_second'] / 1e9:>9.1f} {mfu:>6} {p['peak_memory_bytes'] / mib:>17.0f} "
                     f"{p['warmup_seconds']:>10.1f}")
    if r.get("ratio") is not None:
        rounds = " ".join(f"{v:.2f}" for v in r["ratio_rounds"])
        lines += ["", f"ours/baseline img/s: {r['ratio']:.2f}x (median of {len(r['ratio_rounds'])} rounds: {rounds}); "
                  f"best epochs {r['ratio_best']:.2f}x"
                  + (f", per CPU-second {r['ratio_cpu_time']:.2f}x" if r.get("ratio_cpu_time") else "")]
    per_epoch = " ".join(f"{v / mib:.0f}" for v in r["ours"]["peak_memory_bytes_epochs"])
    live = " ".join(f"{v / mib:.0f}" for v in r["ours"]["rss_bytes_epochs"])
    verdict = ("flat" if r["memory_flat"] else "GROWING") if r["memory_flat"] is not None else "needs >= 3 epochs"
    growth = f"{100 * r['memory_growth']:+.1f}% from epoch 2, " if r["memory_growth"] is not None else ""
    lines.append(f"ours {mem} per epoch: {per_epoch} ({growth}{verdict})")
    if r["memory_kind"] == "peak_rss":
        lines.append(f"ours live RSS (MiB) after each epoch: {live}")
    return "\n".join(lines)


def profile_step(step: StepFn, x, y, steps: int = 1, row_limit: int = 15, device="cpu") -> str:
    """torch.profiler table of the top ops (by self time) over ``steps`` calls of ``step(x, y)``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(x, y)
        _synchronize(device)
    sort = "self_cuda_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=row_limit)
