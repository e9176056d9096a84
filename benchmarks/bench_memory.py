"""Peak memory of one training step per method, in one process (a GPU check has no time for one process each).

    python benchmarks/bench_memory.py --device cuda --model wide_resnet28_10 --batch-size 256 --amp bf16 --json

Each method's step is built and run as ``robustscale bench`` builds it (train's defaults, eager), one warm-up
and one timed step; the peak is ``torch.cuda.max_memory_allocated`` on a GPU (peak RSS on the CPU), reset
before each method.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="wide_resnet16_1")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--amp", default="off")
    p.add_argument("--methods", default=None, help="comma-separated (default: every method this checkout has)")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    args = p.parse_args(argv)

    from robustscale.bench import bench_train_step
    from robustscale.config import Method, TrainConfig

    methods = args.methods.split(",") if args.methods else [m.value for m in Method]
    rows = {}
    for method in methods:
        cfg = TrainConfig.from_dict({"model": args.model, "dataset": args.dataset, "method": method,
                                     "attack_steps": args.attack_steps, "batch_size": args.batch_size,
                                     "amp": args.amp, "compile": "off", "energy": False},
                                    source="bench_memory flags")
        r = bench_train_step(cfg, device=args.device, steps=1, warmup=1, epochs=1, peak=False)
        rows[method] = {"peak_memory_bytes": r["ours"]["peak_memory_bytes"],
                        "flops_per_image": r["ours"]["flops_per_image"], "memory_kind": r["memory_kind"]}
        print(f"{method:<12} peak {r['ours']['peak_memory_bytes'] / 2**30:7.3f} GiB  "
              f"{r['ours']['flops_per_image'] / 1e9:8.3g} GFLOP/img", file=sys.stderr if args.json else sys.stdout,
              flush=True)
    if args.json:
        print(json.dumps({"model": args.model, "batch_size": args.batch_size, "amp": args.amp,
                          "device": args.device, "methods": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
