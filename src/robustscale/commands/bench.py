"""``robustscale bench``: throughput of the adversarial training step, optionally against the baseline."""
from __future__ import annotations

import argparse
import json

from ..bench import bench_train_step, format_result
from ..config import TrainConfig
from ..models import check_model_name


def bench_config(args: argparse.Namespace):
    """The TrainConfig of the step to time: train's defaults plus the flags given."""
    check_model_name(args.model)
    changes = {"model": args.model, "dataset": args.dataset, "method": args.method, "attack_steps": args.attack_steps,
               "eps": args.eps, "batch_size": args.batch_size, "energy": False}
    for key in ("amp", "channels_last", "compile"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    return TrainConfig.from_dict(changes, source="robustscale bench flags")


def run(args: argparse.Namespace) -> int:
    cfg = bench_config(args)
    result = bench_train_step(cfg, device=args.device, steps=args.steps, warmup=args.warmup, epochs=args.epochs,
                              baseline=args.baseline, seed=args.seed, peak=args.peak, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    return 0
