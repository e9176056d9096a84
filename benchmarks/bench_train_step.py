"""Ablation of the adversarial training step: the baseline, then our speed-ups one by one.

All variants run in the same process on the same synthetic batch, in alternating rounds
(robustscale.bench.run_rounds), and every speed-up is the median of per-round ratios against
the baseline, so that load from other processes hits all variants alike.

    python benchmarks/bench_train_step.py                    # the CPU target: WRN-16-2, 32x32, B=128, PGD-10
    python benchmarks/bench_train_step.py --profile          # + torch.profiler top ops of ours and the baseline
    python benchmarks/bench_train_step.py --device cuda --amp bf16 --batch-size 512 --json out.json

Variants: baseline (BaselineStep: weight grads in attack steps, logging forward, fp32, NCHW,
eager); input-only (our task, NCHW, eager); +channels-last (the `robustscale train` default);
+compile (torch.compile of the model; its compile time is reported as warm-up seconds);
and with --amp, the fastest variant again under autocast.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="wide_resnet16_2")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="off", help="off or bf16: adds a variant with autocast")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled variant")
    p.add_argument("--profile", action="store_true", help="print torch.profiler top ops of ours and the baseline")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    import timm
    import torch

    import robustscale
    from robustscale.bench import (BaselineStep, OursStep, measure_peak_flops, count_step_flops, profile_step,
                                   run_rounds)
    from robustscale.compute import detect_device, measure_step_flops
    from robustscale.config import TrainConfig
    from robustscale.data.info import dataset_info
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model

    info = dataset_info(args.dataset)
    input_size, classes = tuple(info.input_size), info.num_classes
    base_cfg = TrainConfig(model=args.model, dataset=args.dataset, attack_steps=args.attack_steps,
                           batch_size=args.batch_size, energy=False)
    variants = {"baseline": None,
                "input-only": base_cfg.replace(channels_last=False, compile=False),
                "+channels-last": base_cfg.replace(channels_last=True, compile=False)}
    if args.compile:
        variants["+compile"] = base_cfg.replace(channels_last=True, compile=True)
    if args.amp != "off":
        variants[f"+{args.amp}"] = base_cfg.replace(channels_last=True, compile=args.compile, amp=args.amp)

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=classes, in_chans=input_size[0],
                         **dataset_normalization(info.name.value))
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, *input_size, generator=gen).to(dev)
    y = torch.randint(0, classes, (args.batch_size,), generator=gen).to(dev)
    paths, flops = {}, {}
    for name, cfg in variants.items():
        attack_gen = torch.Generator(device=dev).manual_seed(1)
        if cfg is None:
            paths[name] = BaselineStep(base_cfg, copy.deepcopy(model), dev, generator=attack_gen)
            flops[name] = count_step_flops(lambda: BaselineStep(base_cfg, copy.deepcopy(model), "cpu"), input_size,
                                           classes)
        else:
            paths[name] = OursStep(cfg, copy.deepcopy(model), dev, generator=attack_gen)
            flops[name] = measure_step_flops(model, cfg, input_size).train_step_flops

    peak = measure_peak_flops(dev)
    kind, device_name = detect_device(dev)
    print(f"{args.model} PGD-{args.attack_steps}, batch {args.batch_size}, {'x'.join(map(str, input_size))}, "
          f"{kind} ({device_name}, {torch.get_num_threads()} threads); torch {torch.__version__}, timm "
          f"{timm.__version__}; measured peak {peak['peak_flops_per_second'] / 1e9:.0f} GFLOP/s ({peak['dtype']} {peak.get('kernel', 'matmul')})",
          flush=True)
    t0 = time.perf_counter()
    res = run_rounds(paths, x, y, args.steps, args.rounds, dev, warmup=args.warmup, progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    base = res["baseline"]["images_per_second"]
    rows = []
    print(f"\n| variant | img/s (median) | x baseline (median of per-round ratios) | x baseline (best rounds) | "
          f"x baseline (CPU time) | GFLOPs/img | GFLOP/s | MFU % | warm-up s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in res.items():
        ips = statistics.median(r["images_per_second"])
        ratios = [a / b for a, b in zip(r["images_per_second"], base)]
        cpu_ratio = sum(res["baseline"]["cpu_seconds"]) / sum(r["cpu_seconds"])
        best_ratio = max(r["images_per_second"]) / max(base)
        achieved = ips * flops[name]
        row = {"variant": name, "images_per_second": ips, "ratio": statistics.median(ratios), "ratio_rounds": ratios,
               "flops_per_image": flops[name], "achieved_flops_per_second": achieved,
               "mfu": achieved / peak["peak_flops_per_second"], "warmup_seconds": r["warmup_seconds"],
               "ratio_best": best_ratio, "ratio_cpu_time": cpu_ratio, "cpu_seconds_rounds": r["cpu_seconds"],
               "images_per_second_rounds": r["images_per_second"], "peak_memory_bytes_rounds": r["peak_memory_bytes"]}
        rows.append(row)
        print(f"| {name} | {ips:.2f} | {row['ratio']:.2f} ({' '.join(f'{v:.2f}' for v in ratios)}) | "
              f"{best_ratio:.2f} | {cpu_ratio:.2f} | "
              f"{flops[name] / 1e9:.3f} | {achieved / 1e9:.1f} | {100 * row['mfu']:.1f} | {r['warmup_seconds']:.1f} |")
    print(f"\n{args.rounds} rounds x {args.steps} steps per variant, {wall:.0f} s")
    if args.profile:
        for name in ("baseline", "+channels-last"):
            print(f"\n## torch.profiler, one step of {name} (top ops by self time)\n")
            print(profile_step(paths[name], x, y, steps=1, row_limit=12, device=dev))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "device_name": device_name, "peak": peak, "versions": {
                "torch": torch.__version__, "timm": timm.__version__, "robustscale": robustscale.__version__},
                "variants": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
