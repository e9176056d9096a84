"""``bench_train_step``: our training step (and optionally the baseline) timed in rounds, with FLOPs,
utilisation against the measured peak, and peak memory."""
from __future__ import annotations

import copy
import platform
import statistics
from typing import Any

import timm
import torch

from .. import __version__
from ..compute import detect_device, measure_peak_flops, measure_step_flops
from ..config import Amp, TrainConfig
from ..data.info import dataset_info, dataset_normalization
from ..errors import UserError
from ..evaluation.api import resolve_device
from ..models import create_model
from ..train.backends import amp_dtype, enable_fast_kernels
from .memory import MEMORY_GROWTH_LIMIT, memory_growth
from .rounds import run_rounds
from .steps import BASELINE_METHODS, BaselineStep, OursStep, StepFn, count_step_flops

__all__ = ["bench_train_step", "format_result"]


def _check_device(device: str):
    """The device that exists here (evaluation's check); bench times CPU and CUDA only."""
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
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
    dev = _check_device(device)
    if not cfg.deterministic:
        enable_fast_kernels(dev)  # as robustscale.train does; affects both paths
    _check_arguments(cfg, dev, steps=steps, epochs=epochs, warmup=warmup, baseline=baseline)
    info = dataset_info(cfg.dataset)
    paths, flops, x, y = _build_paths(cfg, dev, info, seed, baseline)
    # GPU: against the bf16 tensor-core peak (the usual MFU convention); CPU: in the run's precision.
    probe_dtype = torch.bfloat16 if dev.type == "cuda" else (amp_dtype(cfg.amp) or torch.float32)
    peak_info = measure_peak_flops(dev, dtype=probe_dtype) if peak else None
    timings = run_rounds(paths, x, y, steps, epochs, dev, warmup=warmup, progress=progress)

    result = _header(cfg, info, paths["ours"], dev, peak_info,
                     {"steps": steps, "warmup": warmup, "epochs": epochs, "seed": seed})
    for name, res in timings.items():
        result[name] = _path_result(res, flops[name], peak_info)
    growth = memory_growth(result["ours"]["peak_memory_bytes_epochs"])
    result["memory_growth"] = growth
    result["memory_flat"] = None if growth is None else bool(growth < MEMORY_GROWTH_LIMIT)
    result.update(_ratios(result, timings) if baseline else dict.fromkeys(
        ("baseline", "ratio", "ratio_rounds", "ratio_best", "ratio_cpu_time")))
    return result


def _check_arguments(cfg: TrainConfig, dev, *, steps: int, epochs: int, warmup: int, baseline: bool) -> None:
    for key, value, low in (("steps", steps, 1), ("epochs", epochs, 1), ("warmup", warmup, 0),
                            ("batch_size", cfg.batch_size, 1)):
        if int(value) < low:
            raise UserError(f"invalid {key.replace('_', '-')} {value!r}: must be >= {low}")
    if cfg.amp is Amp.FP16 and dev.type != "cuda":
        raise UserError("invalid amp 'fp16' on the CPU; valid there: off, bf16")
    if baseline and cfg.method not in BASELINE_METHODS:
        raise UserError(f"--baseline implements PGD-AT only; invalid method {cfg.method.value!r} with --baseline; "
                        f"valid: {', '.join(m.value for m in BASELINE_METHODS)}")


def _build_paths(cfg: TrainConfig, dev, info, seed: int, baseline: bool):
    """``(paths, flops per image, x, y)``: the steps to time, from the same initial weights, on one batch."""
    input_size = tuple(info.input_size)
    num_classes = info.num_classes or 1000
    torch.manual_seed(seed)
    model = create_model(cfg.model, num_classes=num_classes, in_chans=input_size[0],
                         **dataset_normalization(info.name))
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
    return paths, flops, x, y


def _header(cfg: TrainConfig, info, ours: OursStep, dev, peak_info: dict | None, schedule: dict) -> dict[str, Any]:
    """What was timed (``schedule``: steps, warmup, epochs, seed), where, and against which peak."""
    kind, device_name = detect_device(dev)
    return {
        "model": cfg.model, "dataset": info.name.value, "input_size": list(info.input_size),
        "method": cfg.method.value,
        "attack_steps": ours.task.attack.steps if hasattr(ours.task, "attack") else 0,
        "batch_size": cfg.batch_size, "device": kind, "device_name": device_name,
        "threads": torch.get_num_threads() if kind == "cpu" else None,
        "amp": cfg.amp.value, "channels_last": bool(cfg.channels_last), "compile": ours.compiled,
        "compile_reason": ours.compile_reason, **schedule,
        "memory_kind": "cuda_max_memory_allocated" if kind == "cuda" else "peak_rss",
        "peak_flops_per_second": peak_info["peak_flops_per_second"] if peak_info else None,
        "peak_flops_dtype": peak_info["dtype"] if peak_info else None,
        "peak_flops_kernel": peak_info["kernel"] if peak_info else None,
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "robustscale": __version__,
                     "python": platform.python_version()},
    }


def _path_result(res: dict, flops_per_image: float, peak_info: dict | None) -> dict[str, Any]:
    """One path's figures from its timing rounds (medians over epochs, maxima of memory)."""
    ips = statistics.median(res["images_per_second"])
    achieved = ips * flops_per_image
    return {
        "images_per_second": ips,
        "flops_per_image": flops_per_image,
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


def _ratios(result: dict, timings: dict) -> dict[str, Any]:
    """ours / baseline: median of per-round img/s ratios, and two load-robust cross-checks (best epoch of
    each, since load only ever slows an epoch down; images per CPU-second of this process)."""
    rounds = [o / b for o, b in zip(timings["ours"]["images_per_second"], timings["baseline"]["images_per_second"])]
    cpu_ours, cpu_base = sum(timings["ours"]["cpu_seconds"]), sum(timings["baseline"]["cpu_seconds"])
    return {"ratio_rounds": rounds, "ratio": statistics.median(rounds),
            "ratio_best": result["ours"]["images_per_second_best"] / result["baseline"]["images_per_second_best"],
            "ratio_cpu_time": cpu_base / cpu_ours if cpu_ours > 0 else None}


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
