"""The parser of ``robustscale models`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list the model zoo with parameter counts and forward GFLOPs per image",
        description="List the CIFAR models this package registers in timm (or any timm names given), "
        "with exact parameter counts and forward FLOPs per image at the dataset's input size. "
        "FLOPs are counted by torch.utils.flop_counter on the meta device (2 FLOPs per MAC).")
    p.add_argument("names", nargs="*", help="timm model names (default: our zoo)")
    p.add_argument("--dataset", default="cifar10", help="sets input size and classes (default: cifar10)")
    p.add_argument("--num-classes", type=int, default=None, help="override the dataset's class count")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler="run")
