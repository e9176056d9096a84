"""The parser of ``robustscale bench`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse

from ...config import TrainConfig
from .common import DefaultsHelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> None:
    train = TrainConfig()  # the bench defaults are train's, so what is measured is what users get
    p = sub.add_parser(
        "bench", help="time the adversarial training step (img/s, FLOP/s, MFU, peak memory), vs a baseline",
        description="Time robustscale's training step on a synthetic batch (data loading excluded) and print "
        "images/s, measured FLOPs per image, achieved FLOP/s, utilisation against the device's measured dense-kernel "
        "peak and peak memory (RSS on CPU, max allocated on GPU) per epoch, with a leak check. With --baseline, "
        "also time the step as common public code writes it (weight gradients in every attack step, a clean "
        "logging forward, fp32, NCHW, eager) in alternating rounds and print the median per-round speed-up. "
        "Defaults of --amp, --channels-last and --compile are those of `robustscale train`.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", default="wide_resnet16_2", help="timm model name")
    p.add_argument("--dataset", default="cifar10", help="sets input size and class count (no data is read)")
    p.add_argument("--method", default="pgd", help="standard, pgd, trades or fgsm_rs (--baseline: pgd, fgsm_rs)")
    p.add_argument("--attack-steps", type=int, default=10, help="attack steps K")
    p.add_argument("--eps", default="8/255", help="attack radius in [0,1] pixel units")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--amp", default=train.amp.value, help="off, bf16 or fp16 (fp16: CUDA only)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=train.channels_last,
                   help="channels-last memory format")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: train's `compile: auto`, which compiles on CUDA and "
                   "for long CPU runs, i.e. at the steady state timed here); compile time shows as warm-up s")
    p.add_argument("--steps", type=int, default=3, help="timed steps per path per epoch")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per path before the epochs")
    p.add_argument("--epochs", type=int, default=3,
                   help="rounds of --steps steps; peak memory is checked for growth from epoch 2 on")
    p.add_argument("--baseline", action="store_true", help="also time the common public implementation, alternating")
    p.add_argument("--seed", type=int, default=0, help="model init, synthetic batch, random starts")
    p.add_argument("--peak", action=argparse.BooleanOptionalAction, default=True,
                   help="probe the device's dense-kernel peak FLOP/s for the utilisation (MFU); --no-peak skips it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler="run")
