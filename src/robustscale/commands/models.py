"""``robustscale models``: the model zoo with parameter counts and forward FLOPs per image."""
from __future__ import annotations

import argparse
import json

from ..compute.zoo import model_rows
from ..data.info import dataset_info
from ..errors import UserError
from ..models import our_models


def run(args: argparse.Namespace) -> int:
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"invalid --num-classes {args.num_classes}: must be >= 1")
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
