"""``robustscale models``: the model zoo with parameter counts and forward FLOPs per image."""
from __future__ import annotations

import argparse
import json


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
    p.set_defaults(func=run)


def model_rows(names: list[str], dataset: str, num_classes: int | None = None) -> list[dict]:
    """Parameter count and forward FLOPs per image of each model at the dataset's input size."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..data.info import dataset_info, dataset_normalization
    from ..models import check_model_name, count_parameters, create_model

    info = dataset_info(dataset)
    in_chans, h, w = info.input_size
    classes = num_classes or info.num_classes or 1000
    rows = []
    for name in names:
        check_model_name(name)
        with torch.device("meta"):  # no memory, no init cost: shapes only
            model = create_model(name, num_classes=classes, in_chans=in_chans,
                                 **dataset_normalization(info.name)).eval()
            with FlopCounterMode(display=False) as counter:
                model(torch.empty(1, in_chans, h, w))
        rows.append({"model": name, "parameters": count_parameters(model),
                     "forward_flops_per_image": int(counter.get_total_flops()),
                     "input_size": [in_chans, h, w], "num_classes": classes})
    return rows


def run(args: argparse.Namespace) -> int:
    from ..data.info import dataset_info, dataset_normalization
    from ..models import our_models

    info = dataset_info(args.dataset)
    rows = model_rows(args.names or our_models(), info.name.value, args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    c, h, w = info.input_size
    print(f"models at {c}x{h}x{w} input, {rows[0]['num_classes']} classes ({info.name.value})")
    print(f"{'model':<24} {'parameters':>14} {'forward GFLOPs/img':>19}")
    for r in rows:
        print(f"{r['model']:<24} {r['parameters']:>14,} {r['forward_flops_per_image'] / 1e9:>19.3f}")
    return 0
